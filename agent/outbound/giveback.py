"""Units to uncount in the store: a lease's idle units, a reservation not presented.

Units are added per (number, day) and written by ``write_now`` (the watch every second, and
at stop). Each write is taken off the list before it starts and runs to its end even when its
caller is cancelled (the watch is, at stop): a write already on its way must not be made a
second time by the next caller, or the store would count fewer calls than were handed out,
and a cap could be passed. A write that fails goes back on the list; one whose caller was
cancelled and that then fails leaves its units counted (a cap is never passed that way).

May: keep the units and write them through ``OutboundRepo.give_back``. Must not: decide which
units go back (Claims does), or write SQL of its own.
"""

from __future__ import annotations

import asyncio
from datetime import date

from agent.outbound.repo import OutboundRepo


class GiveBacks:
    def __init__(self, repo: OutboundRepo) -> None:
        self._repo = repo
        self._units: dict[tuple[str, str], int] = {}  # units to uncount, per number and day
        self._writing: set[asyncio.Future[None]] = set()  # writes on their way

    def add(self, number: str, day: date | str | None, units: int) -> None:
        if day is None or units <= 0:
            return
        key = (number, day if isinstance(day, str) else day.isoformat())
        self._units[key] = self._units.get(key, 0) + units

    async def write_now(self) -> None:
        if self._writing:  # left going by a cancelled caller: they land first
            await asyncio.gather(*self._writing, return_exceptions=True)
        while self._units:
            key, units = next(iter(self._units.items()))
            del self._units[key]
            write = asyncio.ensure_future(self._repo.give_back(*key, units))
            self._writing.add(write)
            write.add_done_callback(self._writing.discard)
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                raise  # the write goes on and lands: nothing to give back again
            except Exception:
                self.add(*key, units)  # not written: the next caller tries again
                raise
