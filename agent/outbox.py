"""An outbox pump: the loop every store-backed outbox runs (alert webhooks, SMS).

May: run one delivery round, then sleep until the next row is due, the poll interval passes,
or ``wake()`` is called (a row was just queued); keep one HTTP client session for the rounds.
Must not: know what a row is or how it is sent (the outbox's ``deliver`` does), or stop on a
failed round (it is logged, and the next round comes after the poll interval). Rows are
claimed under a lease by the outbox, so two agents on one store never send the same row at
the same time, and a row whose sender died is sent again when its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable

import aiohttp

from agent.clock import Clock
from agent.tasks import stop_task


def backoff(attempts: int, rng: random.Random, *, base: float, ceiling: float) -> float:
    """Seconds before the next try: doubling from ``base`` up to ``ceiling``, with 50-100 %
    jitter so agents coming back together do not hit the receiver in step."""
    return min(ceiling, base * 2.0 ** min(attempts, 20)) * (0.5 + 0.5 * rng.random())


class Pump:
    """Drives one outbox: ``deliver`` sends what is due, ``next_due`` says when more will be."""

    def __init__(
        self,
        name: str,
        clock: Clock,
        deliver: Callable[[], Awaitable[int]],
        next_due: Callable[[], Awaitable[float | None]],
        log: logging.Logger,
        *,
        poll_seconds: float = 30.0,
    ) -> None:
        self._name = name
        self._clock = clock
        self._deliver = deliver
        self._next_due = next_due
        self._log = log
        self._poll = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_timeout: float | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def wake(self) -> None:
        """Run a round now (something was queued) instead of at the next due time."""
        self._wake.set()

    async def session(self, seconds: float) -> aiohttp.ClientSession:
        """The HTTP session for a round's requests, remade when the timeout setting changed."""
        if self._session is not None and self._session_timeout != seconds:
            await self._session.close()
            self._session = None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds))
            self._session_timeout = seconds
        return self._session

    async def _run(self) -> None:
        while True:
            try:
                await self._deliver()
                due = await self._next_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("%s: delivery round failed; retrying", self._name)
                due = None
            wait = self._poll if due is None else min(self._poll, due - self._clock.now())
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
