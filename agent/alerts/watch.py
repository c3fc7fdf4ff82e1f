"""Alerts about the agent itself: AMI link down, store unreachable, keyring missing, deadline
misses above a rate. One incident per condition and agent (subject "agent@<host>", so agents
sharing one store each keep their own), resolved when it clears.

It polls the readiness checks the agent already has (the ones /readyz shows) every
``interval`` seconds; it does no I/O of its own beyond the alert service. The alert outbox
lives in the store, so "store down" cannot be stored while it lasts: it is logged, and raised
(then resolved, with how long it lasted) as soon as the store answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping

from agent.alerts.service import AlertService
from agent.clock import Clock
from agent.errors import StoreError
from agent.tasks import stop_task

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[tuple[bool, str]]]
MISS_WINDOW = 300.0  # deadline misses are counted over 5 minutes
LEGACY_SUBJECT = "agent"  # what agents before per-host subjects called themselves


class SystemWatch:
    def __init__(
        self,
        alerts: AlertService,
        clock: Clock,
        checks: Mapping[str, Check],
        store_check: Check,
        deadline_misses: Callable[[], float],
        misses_limit: Callable[[], int],
    ) -> None:
        self._alerts = alerts
        self._subject = alerts.agent_subject
        self._clock = clock
        self._checks = dict(checks)  # alert kind -> readiness check (healthy, detail)
        self._store_check = store_check
        self._misses = deadline_misses
        self._misses_limit = misses_limit
        self._samples: deque[tuple[float, float]] = deque()
        self._open: set[str] = set()
        self._store_down_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, interval: float = 30.0) -> None:
        found = await self._alerts.incidents(open_only=True)
        self._open = {i.kind for i in found if i.subject == self._subject}
        # An incident an older agent opened as "agent" would stay open for ever (nobody
        # raises that subject now): close it; if the condition lasts, it comes back named.
        watched = {*self._checks, "deadline_misses", "store_down"}
        for incident in found:
            if incident.subject == LEGACY_SUBJECT and incident.kind in watched:
                await self._alerts.resolve(
                    incident.kind, LEGACY_SUBJECT, f"superseded by {self._subject}"
                )
        self._task = asyncio.create_task(self._run(interval), name="system-watch")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.tick()
            except StoreError as exc:
                log.warning("alerts: system watch could not reach the store: %s", exc)
            except Exception:
                log.exception("alerts: system watch round failed")

    async def tick(self) -> None:
        now = self._clock.now()
        if not await self._store_answers(now):
            return  # nothing can be stored now; the next round tries again
        for kind, check in self._checks.items():
            healthy, detail = await check()
            await self._set(kind, not healthy, detail)
        total = self._misses()
        self._samples.append((now, total))
        while self._samples and self._samples[0][0] < now - MISS_WINDOW:
            self._samples.popleft()
        recent = total - self._samples[0][1]
        limit = self._misses_limit()
        await self._set(
            "deadline_misses",
            recent >= limit,
            f"{recent:.0f} calls answered with the fallback after the deadline in 5 minutes"
            f" (alert at {limit})",
        )

    async def _store_answers(self, now: float) -> bool:
        try:
            healthy, detail = await self._store_check()
        except StoreError as exc:
            healthy, detail = False, str(exc)
        if not healthy:
            if self._store_down_since is None:
                self._store_down_since = now
                log.error("alerts: store down (%s); the alert is raised once it answers", detail)
            return False
        if self._store_down_since is not None:
            lasted = now - self._store_down_since
            self._store_down_since = None
            await self._alerts.raise_(
                "store_down", self._subject, f"store unreachable for {lasted:.0f} s"
            )
            await self._alerts.resolve("store_down", self._subject, "store answers again")
        return True

    async def _set(self, kind: str, bad: bool, detail: str) -> None:
        if bad and kind not in self._open:
            await self._alerts.raise_(kind, self._subject, detail)
            self._open.add(kind)
        elif not bad and kind in self._open:
            await self._alerts.resolve(kind, self._subject, f"cleared: {detail}")
            self._open.discard(kind)
