"""Outbound use cases: pick a caller ID for a call, take spam reports, reinstate numbers.

Holds the in-memory view of every number (for O(log n) ranking) and keeps it in step with the
store, which stays the source of truth: the cap is enforced by the store's atomic claim, and
changes made by other processes (CLI, another agent) are picked up through the store's state
version. Policy comes from agent.outbound.policy; this module sequences I/O around it.

Cap units: a call takes a unit from its number's lease when one is held (no store round trip),
else waits for a batched claim. A lease is a few units counted in the store ahead of demand,
or units claimed for a call that meanwhile got its fallback: they serve the next calls, and go
back to the store when idle for LEASE_IDLE_SECONDS, at the pool's midnight and at stop, so the
store ends up counting exactly the calls that were handed a number. Health (promotions) is
re-planned only for pools where an event (rest or quarantine starting or ending, a new day,
a report, a reload) changed it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Protocol

from agent import contract, phone
from agent.clock import Clock
from agent.config import Config, PoolConfig
from agent.contact.presence import area_hint, number_area
from agent.errors import BadRequest, UnknownNumber
from agent.outbound.audit import AuditWriter, CallContext
from agent.outbound.claims import ClaimBatcher
from agent.outbound.fallback import PATTERN_USES, FallbackGuard
from agent.outbound.policy import (
    NumberState,
    Selector,
    intensive_rest,
    local_day,
    plan_promotions,
    presence_wanted,
    quarantine_due,
)
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.outbound.view import PoolDays, build_states, number_row
from agent.store import Database
from agent.tasks import stop_task

log = logging.getLogger(__name__)

LEASE_IDLE_SECONDS = 1.0  # a lease unused this long goes back to the store
# Re-plans of promotions after another process moved first, before leaving it to the watch.
_RECONCILE_TRIES = 3


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    reason: str
    pool: str | None = None
    number: str | None = None  # E.164 caller ID to present; None = leave the dialplan's
    name: str | None = None  # caller name (CNAM)


# The state of a reported number after its report (ReportResult.state).
REPORT_QUARANTINED = "quarantined"  # out of its pool (by this report or an earlier one)
REPORT_IN_POOL = "in_pool"  # one of ours, still handed out from its pool
REPORT_UNKNOWN = "unknown"  # a valid number that is not one of ours: recorded as a keyed hash
REPORT_INVALID = "invalid"  # not a phone number: nothing recorded


@dataclass(frozen=True, slots=True)
class ReportResult:
    number: str  # E.164 of ours; masked when not ours or unparseable (never a stranger's number)
    ours: bool
    reports_today: int
    quarantined: bool  # this report quarantined the number
    duplicate: bool = False  # the same AMI event was already recorded (another agent)
    state: str = REPORT_UNKNOWN  # the number's real state now: one of REPORT_*


class PinnedNumber(Protocol):
    """A caller ID announced to a callee (agent.contact), counted when it was announced."""

    @property
    def number(self) -> str: ...
    @property
    def reserved_day(self) -> str: ...  # the pool's local day its unit was counted for


class PinSource(Protocol):
    """Pins, asked on the call's path: in memory, no I/O (writes go in the background)."""

    def pinned(self, purpose: str, callee_hash: str, now: float) -> PinnedNumber | None: ...
    def used(self, pin: PinnedNumber, now: float) -> None: ...
    def dropped(self, pin: PinnedNumber, reason: str, now: float) -> None: ...


@dataclass(slots=True)
class DecisionHooks:
    """Observers of decisions (metrics); called synchronously, must not block."""

    on_decision: list[Callable[[Decision], None]] = field(default_factory=list)
    on_alert: list[Callable[[str, str | None, str], None]] = field(default_factory=list)


class OutboundService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: Config,
        hash_key: bytes,
        hooks: DecisionHooks | None = None,
    ) -> None:
        self._repo = OutboundRepo(db)
        self._reads = OutboundRepo(db.reads)  # background reads: never queued behind claims
        self._clock = clock
        self._config = config
        self._hash_key = hash_key
        self.hooks = hooks or DecisionHooks()
        self._audit = AuditWriter(self._repo)
        self._states: dict[str, NumberState] = {}
        self._fallback = FallbackGuard(lambda number: self._states.get(number))
        self._selector = Selector()
        self._pool_day: dict[str, str] = {}
        self._wakeups: list[tuple[float, str]] = []
        self._wake_at: dict[str, float] = {}  # the wake-up queued for each number
        self._days = PoolDays()
        self._members: dict[str, list[NumberState]] = {}  # numbers by home pool
        # Pools whose health (usable numbers) may have changed since promotions were planned:
        # health is re-planned for these only, when an event changes it, never on a timer.
        self._dirty_pools: set[str] = set()
        self._state_version = -1
        self._lock = asyncio.Lock()  # serialises state rebuilds, not decisions
        self._claims = ClaimBatcher(self._repo, self._on_spare)
        # Numbers holding a lease -> when it was last used (the loop's monotonic time).
        self._holding: dict[str, float] = {}
        # Numbers with a lease refill on its way, with the state it was asked for and its size.
        self._refilling: dict[str, tuple[NumberState, int]] = {}
        self._give_backs: dict[tuple[str, str], int] = {}  # units to uncount, per number/day
        self._claims_in_flight: dict[str, int] = {}  # per pool
        self._claim_settled_event = asyncio.Event()  # set (and replaced) at every settled claim
        self._background: set[asyncio.Task[None]] = set()
        self._watch_task: asyncio.Task[None] | None = None
        self._read_only = False
        self.pins: PinSource | None = None  # set by app.py when patient contact runs

    @property
    def config(self) -> Config:
        return self._config

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, *, watch_interval: float | None = 1.0, write: bool = True) -> None:
        """Load the view from the store; ``write=False`` for read-only listings (no config sync,
        no promotions)."""
        self._read_only = not write
        if write:
            await self._repo.sync_numbers(self._number_rows(self._config))
        await self.reload_state()
        self._audit.start()
        if watch_interval:
            self._watch_task = asyncio.create_task(
                self._watch(watch_interval), name="outbound-watch"
            )

    async def stop(self) -> None:
        # The watch first (it refills and gives back too), then every claim still in flight,
        # then the leases: nothing granted after this point stays counted for nobody.
        await stop_task(self._watch_task)
        self._watch_task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._claims.drain()
        try:
            await self.return_leases()
        except Exception:  # the units stay counted (caps safe); the audit must still be written
            log.exception("outbound: could not give back the units held here")
        await self._audit.stop()

    async def apply_config(self, config: Config) -> None:
        """Swap in a new config whole and rebuild the number view from the store."""
        await self._repo.sync_numbers(self._number_rows(config))
        await self.reload_state(config)

    async def flush(self) -> None:
        """Write what is queued (audit rows, rests being decided) to the store now."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._audit.flush()

    async def return_leases(self) -> None:
        """Uncount every unit held here and not handed out (at stop; before reading counts)."""
        for number in list(self._holding):
            self._release(number)
        await self._give_back_now()

    async def _watch(self, interval: float) -> None:
        """Pick up changes other processes made (CLI reports, reinstatements) and timed ones."""
        while True:
            await asyncio.sleep(interval)
            try:
                self._release_idle(LEASE_IDLE_SECONDS)
                await self._give_back_now()
                if await self._reads.state_version() != self._state_version:
                    await self.reload_state()
                else:
                    await self._reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbound: could not refresh state from the store; will retry")

    @staticmethod
    def _number_rows(config: Config) -> list[tuple[str, str, bool]]:
        return [(n.number, n.pool, n.active) for n in config.numbers.values()]

    # -- the in-memory view ----------------------------------------------------------------
    def _pool_of(self, st: NumberState) -> PoolConfig:
        return self._config.pools[st.serving_pool or st.home_pool]

    async def reload_state(self, config: Config | None = None) -> None:
        """Rebuild the view from the store, for ``config`` (default: the current one), then
        re-plan promotions.

        Everything is read first and swapped at the end, so a store failure midway leaves the
        running config and view as they were.
        """
        await self._load_view(config or self._config)
        await self._reconcile()

    async def _load_view(self, config: Config) -> None:
        """Read numbers, counts, rests and quarantines from the store into a new view."""
        async with self._lock:
            now = self._clock.now()
            version = await self._reads.state_version()
            rows = {r.number: r for r in await self._reads.numbers()}
            oldest = min(local_day(now, p.rules.timezone) for p in config.pools.values())
            usage: dict[tuple[str, str], int] = {
                (n, d): u
                for n, d, u in await self._reads.usage_since(
                    (oldest - timedelta(days=1)).isoformat()
                )
            }
            rests: dict[str, list[tuple[float, float]]] = {}
            for number, start, end in await self._reads.rests_after(now):
                rests.setdefault(number, []).append((start, end))
            quarantined = dict(await self._reads.quarantines_after(now))
            self._days = PoolDays()  # a pool's time zone may have changed
            days = self._days
            states, computed = build_states(config, rows, usage, rests, quarantined, days, now)
            for number, old in self._states.items():
                new = states.get(number)
                if not old.held:
                    continue
                if new is not None and new.day == old.day:
                    new.held = old.held  # counted in the rows just read: still ours to hand out
                    new.used = max(new.used, old.used)
                else:
                    self._uncount(number, old.day, old.held)
                    self._holding.pop(number, None)
            self._config = config
            self._states = states
            self._state_version = version
            self._rebuild_selector(now)
        if computed and not self._read_only:
            await self._repo.set_presences(computed)

    def _rebuild_selector(self, now: float) -> None:
        self._selector = Selector()
        self._wakeups = []
        self._wake_at = {}
        self._members = {}
        for st in self._states.values():
            self._members.setdefault(st.home_pool, []).append(st)
        self._dirty_pools = set(self._config.pools)
        self._pool_day = {
            name: local_day(now, p.rules.timezone).isoformat()
            for name, p in self._config.pools.items()
        }
        for st in self._states.values():
            self._place(st, now)

    def _today(self, pool: PoolConfig, now: float) -> date:
        return self._days.today(pool, now)

    def _place(self, st: NumberState, now: float) -> None:
        """Put a number in the selector if it may be handed out now, else note when to look."""
        self._selector.discard(st.number)
        pool = self._pool_of(st)
        today = self._today(pool, now)
        if st.day != today:
            if st.held:  # yesterday's lease: uncounted, so yesterday's count stays exact
                self._uncount(st.number, st.day, st.held)
                self._holding.pop(st.number, None)
            st.day, st.used, st.held = today, 0, 0
        wake = st.next_change(now)
        if wake is not None and self._wake_at.get(st.number) != wake:
            self._wake_at[st.number] = wake
            heapq.heappush(self._wakeups, (wake, st.number))
        if not st.healthy(now) or not st.may_claim(st.cap_on(today, pool.rules.warmup_days)):
            return
        self._selector.put(st.number, pool.name, st.presence, st.committed(), st.last_used_at)

    def _roll_days(self, now: float) -> None:
        """At a pool's local midnight every count restarts at zero: re-rank that pool."""
        for name, pool in self._config.pools.items():
            today = local_day(now, pool.rules.timezone).isoformat()
            if self._pool_day.get(name) != today:
                self._pool_day[name] = today
                self._selector.discard_pool(name)
                self._dirty_pools.add(name)
                for st in self._states.values():
                    if self._pool_of(st).name == name:
                        self._place(st, now)
        while self._wakeups and self._wakeups[0][0] <= now:
            wake, number = heapq.heappop(self._wakeups)
            if self._wake_at.get(number) == wake:
                del self._wake_at[number]
            woken = self._states.get(number)
            if woken is not None:
                self._dirty_pools.add(self._pool_of(woken).name)  # a rest or quarantine ends
                self._place(woken, now)

    async def _reconcile(self) -> None:
        """Promote reserve numbers into pools that fell below min_active, or send them back.

        The store decides: the moves apply only if no other process changed the shared state
        since this view was read (OutboundRepo.move_reserves); else the view is read again
        and re-planned from what the other agent did. So two agents never both promote one
        reserve number, nor one each for the same shortfall, and they end with one state."""
        for _ in range(_RECONCILE_TRIES):
            now = self._clock.now()
            self._roll_days(now)
            if self._read_only or not self._dirty_pools:
                return
            dirty, self._dirty_pools = self._dirty_pools, set()
            moves = self._plan_moves(dirty, now)
            if not moves:
                return
            seen = self._state_version
            planned = [(n, self._states[n].serving_pool, target) for n, target in moves]
            try:
                applied = await self._repo.move_reserves(planned, now, seen)
            except BaseException:
                self._dirty_pools |= dirty  # not decided: planned again on the next event
                raise
            if applied:
                if self._state_version == seen:
                    self._state_version = seen + 1  # our own moves: nothing new to read
                await self._moved(moves, now)
                return
            log.info("outbound: the reserves changed in the store meanwhile; following it")
            await self._load_view(self._config)  # every pool is planned again from it

    def _plan_moves(self, dirty: set[str], now: float) -> list[tuple[str, str | None]]:
        if any(self._config.pools[name].reserve for name in dirty if name in self._config.pools):
            dirty = set(self._config.pools)  # reserve numbers came back: every pool may want one
        pools = {
            name: (p.reserve, p.rules.min_active)
            for name, p in self._config.pools.items()
            if name in dirty or p.reserve
        }
        states = [st for name in pools for st in self._members.get(name, ())]
        return plan_promotions(pools, states, now)

    async def _moved(self, moves: list[tuple[str, str | None]], now: float) -> None:
        """Reserve moves the store took: into the view, with an alert for each promotion."""
        for number, target in moves:
            st = self._states.get(number)
            if st is None:
                continue
            st.serving_pool = target
            if target is not None:
                st.promoted_day = local_day(now, self._config.pools[target].rules.timezone)
                message = (
                    f"reserve number {phone.mask(number)} promoted into pool {target}:"
                    " too few usable numbers"
                )
                await self._alert(now, "reserve_promoted", target, message)
            else:
                st.promoted_day = None
                log.info("outbound: reserve number %s returns to the reserve", phone.mask(number))
            self._place(st, now)

    async def _alert(self, now: float, kind: str, pool: str | None, message: str) -> None:
        log.warning("alert %s: %s", kind, message)
        await self._repo.add_alert(now, kind, pool, message)
        for hook in self.hooks.on_alert:
            hook(kind, pool, message)

    # -- deciding --------------------------------------------------------------------------
    @functools.lru_cache(maxsize=4096)  # noqa: B019  (bounded; lives as long as the service)
    def _callee(self, callee: str, region: str) -> tuple[str | None, str | None]:
        """Presence key and keyed hash of a callee: parsing numbers is the costliest step of a
        decision, and patients are called again (reminder, then confirmation)."""
        try:
            e164 = phone.to_e164(callee, region, require_valid=False)
        except phone.InvalidNumber:
            return None, None  # an internal extension or junk: no local presence, still served
        return number_area(e164), phone.keyed_hash(self._hash_key, e164)

    def callee_hash(self, callee: str) -> str | None:
        try:
            e164 = phone.to_e164(callee, self._config.default_region, require_valid=False)
        except phone.InvalidNumber:
            return None
        return phone.keyed_hash(self._hash_key, e164)

    def fallback_decision(self, purpose: str, reason: str) -> Decision:
        """The answer when the agent cannot decide in time: the pool's fallback. No I/O."""
        pool = self._config.pool_for(purpose)
        if pool is None:
            return Decision(contract.STATUS_ERROR, "unknown_purpose")
        return self._fallback_answer(pool, contract.STATUS_FALLBACK, reason, self._clock.now())

    def _fallback_answer(self, pool: PoolConfig, status: str, reason: str, now: float) -> Decision:
        """The pool's fallback while it is healthy, else a healthy reserve number, else no
        number (the dialplan keeps its own fallback); see agent/outbound/fallback.py."""
        chosen = self._fallback.choose(pool, self._config.reserve_pools, now)
        if chosen is None:
            return Decision(status, reason, pool.name)
        number, name = chosen
        if self._fallback.count(pool, number, now):
            message = f"pool {pool.name}: fallback caller ID used {PATTERN_USES} times in an hour"
            for hook in self.hooks.on_alert:
                hook("fallback_used", pool.name, message)
        return Decision(status, reason, pool.name, number, name)

    async def decide(
        self,
        purpose: str,
        callee: str,
        uniqueid: str = "",
        case_ref: str | None = None,
        area: str | None = None,
    ) -> Decision:
        decision = await self._decide(purpose, callee, uniqueid, case_ref, area)
        for hook in self.hooks.on_decision:
            hook(decision)
        return decision

    async def reserve(self, purpose: str, callee: str, area: str | None = None) -> Decision:
        """The number a call announced now will present (agent.contact's announce): chosen and
        counted now as that call's, without an audit row; the call then presents it through
        ``pins`` without counting it again."""
        return await self._decide(purpose, callee, "", None, area, audited=False)

    def give_back(self, number: str, day: str) -> None:
        """Uncount a unit reserved for an announced call that will not present it."""
        self._uncount(number, day, 1)
        st = self._states.get(number)
        if st is not None and st.day is not None and st.day.isoformat() == day and st.used:
            st.used -= 1
            self._place(st, self._clock.now())

    def _pinned(
        self, pool: PoolConfig, purpose: str, callee_hash: str, now: float
    ) -> NumberState | None:
        """The number announced to this callee, while it may be presented (no claim: its unit
        was counted when it was announced); else the pin is dropped with the reason."""
        assert self.pins is not None
        pin = self.pins.pinned(purpose, callee_hash, now)
        if pin is None:
            return None
        st = self._states.get(pin.number)
        if st is None or self._pool_of(st).name != pool.name:
            why = "not_in_pool"
        elif not st.healthy(now):
            why = "unhealthy"
        elif pin.reserved_day != self._today(pool, now).isoformat():
            why = "another_day"
        else:
            st.last_used_at = max(st.last_used_at, now)
            self.pins.used(pin, now)
            return st
        self.give_back(pin.number, pin.reserved_day)
        self.pins.dropped(pin, why, now)
        return None

    async def _decide(
        self,
        purpose: str,
        callee: str,
        uniqueid: str,
        case_ref: str | None,
        area: str | None = None,
        *,
        audited: bool = True,
    ) -> Decision:
        if not purpose:
            raise BadRequest("missing_purpose")
        pool = self._config.pool_for(purpose)
        if pool is None:
            raise BadRequest("unknown_purpose")
        now = self._clock.now()
        self._roll_days(now)
        own_area, callee_hash = self._callee(callee, pool.rules.region)
        ctx = CallContext(uniqueid, purpose, pool.name, callee_hash, case_ref, audited)
        if self.pins is not None and callee_hash is not None and audited:
            pinned = self._pinned(pool, purpose, callee_hash, now)
            if pinned is not None:
                decision = Decision(
                    contract.STATUS_OK, "pinned", pool.name, pinned.number, pinned.name
                )
                return self._record(now, ctx, decision)
        presence, local_reason = presence_wanted(own_area, area_hint(area) if area else None)

        st = await self._claim_from(pool, presence, now, ctx)
        if st is not None:
            reason = local_reason if presence and st.presence == presence else "least_used"
            decision = Decision(contract.STATUS_OK, reason, pool.name, st.number, st.name)
            return self._record(now, ctx, decision)

        mode = pool.rules.on_exhausted
        if mode == "borrow_reserve":
            for reserve in self._config.reserve_pools:
                st = await self._claim_from(reserve, presence, now, ctx)
                if st is not None:
                    decision = Decision(
                        contract.STATUS_OK, "borrowed_reserve", pool.name, st.number, st.name
                    )
                    return self._record(now, ctx, decision)
        if mode == "refuse":
            decision = Decision(contract.STATUS_REFUSED, "pool_exhausted", pool.name)
        else:
            decision = self._fallback_answer(pool, contract.STATUS_EXHAUSTED, "pool_exhausted", now)
        return self._record(now, ctx, decision)

    async def _claim_from(
        self, pool: PoolConfig, presence: str | None, now: float, ctx: CallContext
    ) -> NumberState | None:
        """Take the best candidate: from its lease at once, else by a claim in the store.

        The reservation re-ranks the number at once, so concurrent calls spread over the pool
        while the store confirms. The store has the last word on the cap. A pool is exhausted
        only once no candidate is left and no claim on it is still in flight: a pending claim
        may yet fail and give its room back.
        """
        day = local_day(now, pool.rules.timezone)
        while True:
            number = self._selector.take(pool.name, presence)
            if number is None:
                if not self._claims_in_flight.get(pool.name):
                    return None
                await self._claim_settled_event.wait()
                continue
            st = self._states[number]
            cap = st.cap_on(day, pool.rules.warmup_days)
            if st.held and st.day == day:
                # Counted in the store already: no round trip on the call's path.
                st.held -= 1
                self._holding[number] = asyncio.get_running_loop().time()
                if not st.held:
                    self._holding.pop(number, None)
                self._handed(st, pool, st.used - st.held, now)
                self._refill(st, cap, day)
                self._place(st, now)
                return st
            st.reserved += 1
            self._claims_in_flight[pool.name] = self._claims_in_flight.get(pool.name, 0) + 1
            self._place(st, now)
            future = self._claims.claim(number, day.isoformat(), cap)
            self._refill(st, cap, day)
            # The outcome updates our view whatever happens to this call (deadline, hang-up).
            future.add_done_callback(
                functools.partial(self._claim_settled, st, pool, cap, day, now)
            )
            try:
                used = await asyncio.shield(future)
            except asyncio.CancelledError:
                # Not sent yet: withdrawn, nothing counted. Already sent: a unit it gets comes
                # back through on_spare and serves the next call (or is uncounted): the call
                # that got the fallback spends nothing.
                if self._claims.withdraw(future):
                    raise
                if future.done() and not future.cancelled() and future.exception() is None:
                    granted = future.result()
                    if granted is not None:
                        # Granted just as the deadline passed: the unit is this call's, but the
                        # call got its fallback, so it serves the next call instead.
                        self._on_spare(number, day.isoformat(), 0, 1, granted)
                else:
                    future.cancel()  # the batch sees a call gone: its unit becomes a spare
                raise
            if used is not None:
                return st

    def _refill(self, st: NumberState, cap: int, day: date) -> None:
        """Keep a small lease on a number in use, asked in the same batch as the calls."""
        want = st.lease_target(cap) - st.held
        if want > 0 and st.number not in self._refilling:
            self._refilling[st.number] = (st, want)
            st.reserved += want
            self._claims.refill(st.number, day.isoformat(), cap, want)

    def _on_spare(self, number: str, day: str, asked: int, units: int, used: int) -> None:
        """Units the store counted beyond the calls served: hold them for the next calls."""
        if asked:
            refill = self._refilling.pop(number, None)
            if refill is not None:
                refill[0].reserved -= refill[1]
        if not units:
            return
        st = self._states.get(number)
        if st is None or st.day is None or st.day.isoformat() != day:
            self._uncount(number, day, units)
            return
        st.held += units
        st.used = max(st.used, used)
        self._holding.setdefault(number, asyncio.get_running_loop().time())
        self._place(st, self._clock.now())

    def _release_idle(self, idle: float) -> None:
        """Give back leases unused for ``idle`` seconds, so other agents may use the units."""
        cutoff = asyncio.get_running_loop().time() - idle
        for number, last in list(self._holding.items()):
            if last <= cutoff:
                self._release(number)

    def _release(self, number: str) -> None:
        self._holding.pop(number, None)
        st = self._states.get(number)
        if st is None or not st.held or st.day is None:
            return
        self._uncount(number, st.day, st.held)
        st.used -= st.held
        st.held = 0
        self._place(st, self._clock.now())

    def _uncount(self, number: str, day: date | str | None, units: int) -> None:
        if day is None or units <= 0:
            return
        key = (number, day if isinstance(day, str) else day.isoformat())
        self._give_backs[key] = self._give_backs.get(key, 0) + units

    async def _give_back_now(self) -> None:
        while self._give_backs:
            (number, day), units = next(iter(self._give_backs.items()))
            await self._repo.give_back(number, day, units)
            del self._give_backs[(number, day)]

    def _handed(self, st: NumberState, pool: PoolConfig, ordinal: int, now: float) -> None:
        """A call got this number as the ``ordinal``-th of its day."""
        st.last_used_at = max(st.last_used_at, now)
        # Units come in grants shared with other agents, so "reached" rather than "equal":
        # once a day per agent; the store keeps one rest per window whoever decides it.
        if ordinal >= pool.rules.intensive_threshold and st.rest_checked != st.day:
            st.rest_checked = st.day
            task = asyncio.get_running_loop().create_task(self._rest_safely(st.number, pool, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _claim_settled(
        self,
        st: NumberState,
        pool: PoolConfig,
        cap: int,
        day: date,
        now: float,
        future: asyncio.Future[int | None],
    ) -> None:
        st.reserved -= 1
        self._claims_in_flight[pool.name] -= 1
        settled, self._claim_settled_event = self._claim_settled_event, asyncio.Event()
        settled.set()
        counted = not future.cancelled() and future.exception() is None
        used = future.result() if counted else None
        # A reload may have replaced this number's state, and midnight may have passed: only
        # a count for the state's own day goes into the view.
        current = self._states.get(st.number) is st
        if current and counted and st.day == day:
            if used is None:
                st.used = max(st.used, cap)  # full in the store (another agent filled it)
            else:
                st.used = max(st.used, used)
        if used is not None:
            self._handed(st, pool, used, now)
        if current:
            self._place(st, self._clock.now())

    async def _rest_safely(self, number: str, pool: PoolConfig, now: float) -> None:
        try:
            await self._maybe_rest(number, pool, now)
        except Exception:  # the call was answered already; the admin sees the missed rest here
            log.exception("outbound: could not record the rest of %s", phone.mask(number))

    async def _maybe_rest(self, number: str, pool: PoolConfig, now: float) -> None:
        """Today just reached the intensive threshold: rest if the days before did too."""
        rules = pool.rules
        today = local_day(now, rules.timezone)
        days = [
            (today - timedelta(days=i)).isoformat()
            for i in range(1, rules.intensive_days_before_rest)
        ]
        history = await self._reads.usage_for(number, days)
        previous = [history.get(d, 0) for d in days]
        window = intensive_rest(rules.intensive_threshold, previous, rules, now)
        if window is None:
            return
        await self._repo.add_rest(number, window[0], window[1], "intensive_days")
        await self._repo.bump_state_version()  # other agents on this store take the rest too
        st = self._states.get(number)
        if st is not None:
            st.rest_windows.append(window)
            heapq.heappush(self._wakeups, (window[0], number))
        log.info(
            "outbound: %s rests %.0f h from next midnight after %d intensive days",
            phone.mask(number),
            rules.rest_hours,
            rules.intensive_days_before_rest,
        )

    def _record(self, now: float, ctx: CallContext, decision: Decision) -> Decision:
        if ctx.audited:
            self._audit.add(ctx.audit(now, decision.number, decision.status, decision.reason))
        return decision

    def record_failure(
        self, uniqueid: str, purpose: str, decision: Decision, callee: str, case_ref: str | None
    ) -> None:
        """Audit an answer the route gave without a decision (deadline, error)."""
        self._audit.add(
            AuditRecord(
                self._clock.now(),
                uniqueid,
                purpose or "-",
                decision.pool,
                decision.number,
                decision.status,
                decision.reason,
                self.callee_hash(callee),
                case_ref,
            )
        )
        for hook in self.hooks.on_decision:
            hook(decision)

    # -- reports and admin -----------------------------------------------------------------
    def resolve_number(self, text: str) -> str:
        try:
            return phone.to_e164(text, self._config.default_region, require_valid=False)
        except phone.InvalidNumber as exc:
            raise BadRequest(f"not a phone number: {exc}") from None

    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> ReportResult:
        """A spam report against one of our caller IDs; quarantines at the pool's threshold.

        ``event_id`` (the AMI UserEvent's Uniqueid) makes a report that several agents
        receive count once."""
        now = self._clock.now()
        try:
            number = self.resolve_number(number_text)
        except BadRequest:
            log.info(
                "spam report from %s for an unparseable number %s: ignored",
                source,
                phone.mask(number_text),
            )
            return ReportResult(phone.mask(number_text), False, 0, False, state=REPORT_INVALID)
        cfg = self._config.numbers.get(number)
        if cfg is None:
            day = local_day(now, self._config.pools[next(iter(self._config.pools))].rules.timezone)
            # A stranger's number (often a patient's) is stored as a keyed hash, like callees.
            await self._repo.add_report(
                phone.keyed_hash(self._hash_key, number),
                now,
                day.isoformat(),
                source,
                ours=False,
                event_id=event_id,
            )
            log.info(
                "spam report from %s for %s: not one of ours, recorded and ignored",
                source,
                phone.mask(number),
            )
            return ReportResult(phone.mask(number), False, 0, False, state=REPORT_UNKNOWN)
        st = self._states.get(number)
        pool = self._pool_of(st) if st else self._config.pools[cfg.pool]
        rules = pool.rules
        count, added = await self._repo.add_report(
            number,
            now,
            local_day(now, rules.timezone).isoformat(),
            source,
            ours=True,
            event_id=event_id,
        )
        if not added:
            log.info("spam report from %s for %s: already recorded", source, phone.mask(number))
            return ReportResult(
                number, True, count, False, duplicate=True, state=self._report_state(number, now)
            )
        quarantined = False
        if quarantine_due(count, rules) and not (st and st.quarantined(now)):
            until = now + rules.quarantine_days * 86400.0
            await self._repo.quarantine(number, now, until, f"{count} spam reports in a day")
            quarantined = True
            await self._alert(
                now,
                "number_quarantined",
                pool.name,
                f"{phone.mask(number)} quarantined after {count} spam reports today",
            )
            if st is not None:
                st.quarantined_until = until
                self._place(st, now)
            self._dirty_pools.add(pool.name)
            await self._reconcile()
        await self._repo.bump_state_version()
        log.info("spam report from %s for %s (%d today)", source, phone.mask(number), count)
        return ReportResult(number, True, count, quarantined, state=self._report_state(number, now))

    async def sideline(self, number: str, pool_name: str, policy: str) -> None:
        """Act on a drift or reputation signal (the pool's ``on_drift``/``on_flag``): "rest"
        rests the number for the pool's rest_hours from now, "quarantine" quarantines it for
        quarantine_days; "alert" (or anything else) changes nothing here. A number that is
        not ours, or already out of its pool, is left as it is."""
        st = self._states.get(number)
        if policy not in ("rest", "quarantine") or st is None:
            return
        now = self._clock.now()
        pool = self._pool_of(st)
        if policy == "quarantine" and not st.quarantined(now):
            until = now + pool.rules.quarantine_days * 86400.0
            await self._repo.quarantine(number, now, until, f"{policy} on a reputation signal")
            kind, message = "number_quarantined", f"{phone.mask(number)} quarantined: drift or flag"
        elif policy == "rest" and not st.resting(now):
            until = now + pool.rules.rest_hours * 3600.0
            await self._repo.add_rest(number, now, until, "reputation signal")
            kind, message = "number_rested", f"{phone.mask(number)} rested: drift or flag"
        else:
            return
        await self._repo.bump_state_version()
        await self.reload_state()
        await self._alert(now, kind, pool_name, message)

    def _report_state(self, number: str, now: float) -> str:
        st = self._states.get(number)
        return REPORT_QUARANTINED if st is not None and st.quarantined(now) else REPORT_IN_POOL

    async def reinstate(self, number_text: str) -> bool:
        number = self.resolve_number(number_text)
        if number not in self._config.numbers:
            raise UnknownNumber(f"{phone.mask(number)} is not in any pool")
        now = self._clock.now()
        changed = await self._repo.reinstate(number, now)
        await self._repo.bump_state_version()
        await self.reload_state()
        log.info("outbound: %s reinstated by an admin", phone.mask(number))
        return changed

    def fallbacks(self) -> dict[str, str]:
        """purpose -> the caller ID the dialplan keeps in AstDB for when the agent is down."""
        return self._fallback.per_purpose(self._config, self._clock.now())

    def usable_by_pool(self) -> dict[str, int]:
        """Numbers that can be handed out right now, per pool (for metrics and readiness)."""
        return {name: self._selector.count(name) for name in self._config.pools}

    def number_rows(self) -> list[dict[str, object]]:
        """One row per number for `trustline numbers` and the API."""
        now = self._clock.now()
        ordered = sorted(
            self._states.values(), key=lambda s: (s.serving_pool or s.home_pool, s.number)
        )
        return [number_row(st, self._pool_of(st), now) for st in ordered]
