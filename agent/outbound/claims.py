"""The claim batcher: group commit for cap claims, so a burst of calls costs one store round trip.

May: queue claims and lease refills in memory, send them as one ``OutboundRepo.grant_many``
statement, and hand each waiting call its count. Must not: decide policy, write SQL of its own
or keep units for nobody (units no call took go to ``on_spare``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from agent.outbound.repo import OutboundRepo

Spare = Callable[[str, str, int, int, int], None]


@dataclass(slots=True)
class _Wanted:
    day: str
    cap: int
    waiters: list[asyncio.Future[int | None]]
    extra: int = 0  # units asked beyond the waiters (a lease to refill)


class ClaimBatcher:
    """Group commit for claims: every claim waiting while a batch runs goes in the next one.

    Claims on one number are merged into one row of the batch that asks for as many units as
    there are calls waiting on it (plus any lease refill), so calls on a small pool never
    queue behind each other. One round trip and one commit serve a whole batch. Each claim's
    future gets its own count (an ordinal in the day) or None (at cap). Units taken for a call
    that went away meanwhile, and refills, go to ``on_spare(number, day, refill asked, units,
    count)`` (called for every row that asked a refill or has units left over, with 0 units
    when the batch failed): the caller keeps them as a lease or gives them back, so no unit is
    lost or spent for nothing.
    """

    def __init__(self, repo: OutboundRepo, on_spare: Spare, *, max_batch: int = 200) -> None:
        self._repo = repo
        self._on_spare = on_spare
        self._max_batch = max_batch
        self._pending: dict[tuple[str, str], _Wanted] = {}
        self._runner: asyncio.Task[None] | None = None

    def _wanted(self, number: str, day: str, cap: int) -> _Wanted:
        wanted = self._pending.get((number, day))
        if wanted is None:
            wanted = self._pending[(number, day)] = _Wanted(day, cap, [])
        wanted.cap = cap
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="claim-batcher")
        return wanted

    def claim(self, number: str, day: str, cap: int) -> asyncio.Future[int | None]:
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._wanted(number, day, cap).waiters.append(future)
        return future

    def refill(self, number: str, day: str, cap: int, units: int) -> None:
        """Ask for ``units`` more than the calls need, in the next batch (for a lease)."""
        self._wanted(number, day, cap).extra += units

    async def drain(self) -> None:
        """Wait until every claim asked so far has landed (at stop, before leases go back:
        a refill still in flight would otherwise come back after them and stay counted)."""
        while self._runner is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._runner)

    def withdraw(self, future: asyncio.Future[int | None]) -> bool:
        """Take back a claim not yet sent (its call moved on); False once it is on its way."""
        for wanted in self._pending.values():
            if future in wanted.waiters:
                wanted.waiters.remove(future)
                future.cancel()
                return True
        return False

    async def _run(self) -> None:
        try:
            while self._pending:
                batch: list[tuple[str, _Wanted]] = []
                seen: set[str] = set()
                for key, wanted in list(self._pending.items()):
                    if len(batch) >= self._max_batch:
                        break
                    if key[0] in seen:  # the same number for another day (midnight): next batch
                        continue
                    del self._pending[key]
                    if wanted.waiters or wanted.extra:
                        batch.append((key[0], wanted))
                        seen.add(key[0])
                if not batch:
                    continue
                rows = [(n, w.day, w.cap, len(w.waiters) + w.extra) for n, w in batch]
                try:
                    granted = await self._repo.grant_many(rows)
                except Exception as exc:
                    for number, wanted in batch:
                        for future in wanted.waiters:
                            if not future.done():
                                future.set_exception(exc)
                        if wanted.extra:
                            self._on_spare(number, wanted.day, wanted.extra, 0, 0)
                    continue
                for number, wanted in batch:
                    used, units = granted.get(number, (0, 0))
                    ordinal = used - units
                    for future in wanted.waiters:
                        if future.done():  # its call went away after the claim was sent
                            continue
                        if units:
                            ordinal += 1
                            units -= 1
                            future.set_result(ordinal)
                        else:
                            future.set_result(None)
                    if units or wanted.extra:
                        self._on_spare(number, wanted.day, wanted.extra, units, used)
        finally:
            self._runner = None
