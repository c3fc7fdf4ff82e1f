"""Cap units on the call's path: a unit from a lease held here, else a batched claim.

``Claims`` takes the best candidate of a pool from the number view, from its lease at once
(no store round trip) or through the ``ClaimBatcher`` (group commit: every claim waiting
while a batch runs goes in the next one, one ``OutboundRepo.grant_many`` statement). A lease
is a few units counted in the store ahead of demand, or units claimed for a call that
meanwhile got its fallback: they serve the next calls, and go back to the store when idle,
at the pool's midnight and at stop, so the store ends up counting exactly the calls that were
handed a number. Must not: decide policy, write SQL of its own or keep units for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from agent.clock import Clock
from agent.config import PoolConfig
from agent.outbound.ahead import LeaseAhead
from agent.outbound.giveback import GiveBacks
from agent.outbound.leasesize import LeaseSizes
from agent.outbound.policy import LEASE_IDLE_SECONDS, NumberState
from agent.outbound.repo import OutboundRepo
from agent.outbound.view import NumberView

# A call got this number as the ordinal-th of its day: (state, pool, ordinal, now).
Handed = Callable[[NumberState, PoolConfig, int, float], None]

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


class Claims:
    """Leases and claims of cap units for the numbers of one view."""

    def __init__(
        self, view: NumberView, repo: OutboundRepo, clock: Clock, on_handed: Handed
    ) -> None:
        self._view = view
        self._repo = repo
        self._clock = clock
        self._on_handed = on_handed
        self._batcher = ClaimBatcher(repo, self.on_spare)
        # Numbers holding a lease -> when it was last used (the loop's monotonic time).
        self._holding: dict[str, float] = {}
        # Numbers with a lease refill on its way: the state it was asked for, the units its
        # lease had left then, and the pool it serves.
        self._refilling: dict[str, tuple[NumberState, int, str]] = {}
        self._sizes = LeaseSizes()  # each busy number's lease size
        self._give_backs = GiveBacks(repo)
        self._claims_in_flight: dict[str, int] = {}  # claims and refills, per pool
        self._settled_event = asyncio.Event()  # set (and replaced) at every settled claim
        self._ahead = LeaseAhead(view)

    def drop_lease(self, number: str, day: date | None, units: int) -> None:
        """The view dropped a lease held here (its day is over, or its state replaced)."""
        self.uncount(number, day, units)
        self._holding.pop(number, None)
        self._sizes.forget(number)

    async def drain(self) -> None:
        """Wait until every claim sent so far has landed (at stop, before leases go back)."""
        await self._batcher.drain()

    async def return_leases(self) -> None:
        """Uncount every unit held here and not handed out (at stop; before reading counts)."""
        for number in list(self._holding):
            self._release(number)
        await self.give_back_now()

    def give_back(self, number: str, day: str) -> None:
        """Uncount a unit reserved for an announced call that will not present it."""
        self.uncount(number, day, 1)
        st = self._view.states.get(number)
        if st is not None and st.day is not None and st.day.isoformat() == day and st.used:
            st.used -= 1
            self._view.place(st, self._clock.now())

    async def claim_from(
        self, pool: PoolConfig, presence: str | None, now: float
    ) -> NumberState | None:
        """Take the best candidate: from its lease at once, else by a claim in the store.

        The reservation re-ranks the number at once, so concurrent calls spread over the pool
        while the store confirms. The store has the last word on the cap. A pool is exhausted
        only once no candidate is left and no claim or lease refill on it is still in flight:
        a pending claim may yet fail and give its room back, a refill bring units.
        """
        day = self._view.today(pool, now)  # local_day, kept until the pool's next midnight
        while True:
            number = self._view.selector.take(pool.name, presence)
            if number is None:
                if not self._claims_in_flight.get(pool.name):
                    return None
                await self._settled_event.wait()
                continue
            st = self._view.states[number]
            cap = st.cap_on(day, pool.rules.warmup_days)
            in_use = now - st.last_used_at < LEASE_IDLE_SECONDS
            if st.held and st.day == day:
                return self._from_lease(st, pool, cap, day, now, in_use)
            st.reserved += 1
            self._claims_in_flight[pool.name] = self._claims_in_flight.get(pool.name, 0) + 1
            self._view.place(st, now)
            future = self._batcher.claim(number, day.isoformat(), cap)
            if in_use:
                # In use again within a lease's idle time: a lease will serve its next calls.
                # A number a large pool hands out once a minute gets none: it would only go
                # back to the store unused, one more write for nothing. Its pool's next
                # numbers may get a unit ahead instead, when its calls come fast (ahead.py).
                self._refill(st, pool, cap, day, now)
            else:
                self._lease_ahead(pool, day, now)
            # The outcome updates our view whatever happens to this call (deadline, hang-up).
            future.add_done_callback(functools.partial(self._settled, st, pool, cap, day, now))
            try:
                used = await asyncio.shield(future)
            except asyncio.CancelledError:
                # Not sent yet: withdrawn, nothing counted. Already sent: a unit it gets comes
                # back through on_spare and serves the next call (or is uncounted): the call
                # that got the fallback spends nothing.
                if self._batcher.withdraw(future):
                    raise
                if future.done() and not future.cancelled() and future.exception() is None:
                    granted = future.result()
                    if granted is not None:
                        # Granted just as the deadline passed: the unit is this call's, but the
                        # call got its fallback, so it serves the next call instead.
                        self.on_spare(number, day.isoformat(), 0, 1, granted)
                else:
                    future.cancel()  # the batch sees a call gone: its unit becomes a spare
                raise
            if used is not None:
                return st

    def _from_lease(
        self, st: NumberState, pool: PoolConfig, cap: int, day: date, now: float, in_use: bool
    ) -> NumberState:
        """A unit counted in the store already: no round trip on the call's path."""
        st.held -= 1
        self._holding[st.number] = asyncio.get_running_loop().time()
        if not st.held:
            self._holding.pop(st.number, None)
        self._handed(st, pool, st.used - st.held, now)
        if in_use:
            self._refill(st, pool, cap, day, now)
        else:  # a unit leased ahead: its number is not back for a while, the next ones are
            self._lease_ahead(pool, day, now)
        self._view.place(st, now)
        return st

    def _refill(self, st: NumberState, pool: PoolConfig, cap: int, day: date, now: float) -> None:
        """Keep a small lease on a number in use, asked in the same batch as the calls: once
        half of it is spent, so the store is touched once every few calls, not every call.

        A refill is not reserved like a call's claim: units for no call yet must not rank the
        number as more used, or calls would crowd onto the other numbers and empty their
        leases while this one's refill is on its way. It never stands between a call and the
        cap either: it asks for at most 1/LEASE_SHARE of what is left, and the store grants
        no unit past the cap. Until it lands, the pool is not exhausted: it may bring units
        the store had no other way to hand to this agent's calls. Its size: leasesize.py."""
        target = st.lease_target(cap, self._sizes.units(st.number))
        if target > st.held and st.held * 2 <= target and st.number not in self._refilling:
            target = st.lease_target(cap, self._sizes.asked(st.number, now))
            self._ask(st, pool, cap, day, target - st.held)

    def _lease_ahead(self, pool: PoolConfig, day: date, now: float) -> None:
        """A call went to a number not in use: a unit each for the pool's next numbers, when
        its calls come fast enough to use them (ahead.py)."""
        for st, cap in self._ahead.wanted(pool, day, now, self._refilling.__contains__):
            self._ask(st, pool, cap, day, 1)

    def _ask(self, st: NumberState, pool: PoolConfig, cap: int, day: date, want: int) -> None:
        """Ask ``want`` units for ``st``'s lease in the next batch."""
        self._refilling[st.number] = (st, st.held, pool.name)
        self._claims_in_flight[pool.name] = self._claims_in_flight.get(pool.name, 0) + 1
        self._batcher.refill(st.number, day.isoformat(), cap, want)

    def on_spare(self, number: str, day: str, asked: int, units: int, used: int) -> None:
        """Units the store counted beyond the calls served: hold them for the next calls."""
        if asked:
            refill = self._refilling.pop(number, None)
            if refill is not None:
                asked_by, had, pool = refill
                self._landed(pool)
                if units:
                    self._sizes.landed(number, had - asked_by.held)
        if not units:
            return
        st = self._view.states.get(number)
        if st is None or st.day is None or st.day.isoformat() != day:
            self.uncount(number, day, units)
            return
        st.held += units
        st.used = max(st.used, used)
        self._holding.setdefault(number, asyncio.get_running_loop().time())
        if self._view.selector.ranked_as(number) != (st.committed(), st.last_used_at):
            self._view.place(st, self._clock.now())
        # else ranked as before (units held are not calls): left in its place among equals, so
        # a number leased ahead is still the one the next calls take

    def release_idle(self, idle: float) -> None:
        """Give back leases unused for ``idle`` seconds, so other agents may use the units.

        A grown lease that ran dry with no refill to come (its number near or at its cap)
        holds nothing to give back, yet is idle too: back to a small lease, or its number
        would start a later busy spell (the next day) with the grown one."""
        cutoff = asyncio.get_running_loop().time() - idle
        for number, last in list(self._holding.items()):
            if last <= cutoff:
                self._release(number)
        self._sizes.forget_idle(lambda n: n in self._holding or n in self._refilling)

    def _release(self, number: str) -> None:
        self._holding.pop(number, None)
        self._sizes.forget(number)  # idle: back to a small lease
        st = self._view.states.get(number)
        if st is None or not st.held or st.day is None:
            return
        self.uncount(number, st.day, st.held)
        st.used -= st.held
        st.held = 0
        self._view.place(st, self._clock.now())

    def uncount(self, number: str, day: date | str | None, units: int) -> None:
        self._give_backs.add(number, day, units)

    async def give_back_now(self) -> None:
        await self._give_backs.write_now()

    def _landed(self, pool: str) -> None:
        """A claim or a refill for ``pool`` came back: calls waiting for one look again."""
        self._claims_in_flight[pool] -= 1
        settled, self._settled_event = self._settled_event, asyncio.Event()
        settled.set()

    def _handed(self, st: NumberState, pool: PoolConfig, ordinal: int, now: float) -> None:
        """A call got this number as the ``ordinal``-th of its day."""
        st.last_used_at = max(st.last_used_at, now)
        self._on_handed(st, pool, ordinal, now)

    def _settled(
        self,
        st: NumberState,
        pool: PoolConfig,
        cap: int,
        day: date,
        now: float,
        future: asyncio.Future[int | None],
    ) -> None:
        st.reserved -= 1
        self._landed(pool.name)
        counted = not future.cancelled() and future.exception() is None
        used = future.result() if counted else None
        # A reload may have replaced this number's state, and midnight may have passed: only
        # a count for the state's own day goes into the view.
        current = self._view.states.get(st.number) is st
        if current and counted and st.day == day:
            if used is None:
                st.used = max(st.used, cap)  # full in the store (another agent filled it)
            else:
                st.used = max(st.used, used)
        if used is not None:
            self._handed(st, pool, used, now)
        if current:
            self._view.place(st, self._clock.now())
