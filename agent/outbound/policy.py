"""Outbound caller-ID policy: pure functions and in-memory structures, no I/O, no clock reads.

What it decides: whether a number may be handed out now (active, not resting, not
quarantined, under today's cap in its pool's time zone), which eligible number is preferred
(local presence, then least used today, then least recently used), when intensive use earns a
rest, when reports earn a quarantine, how a promoted reserve number's cap ramps up, and what
to do when a pool has nothing left. The store makes the final cap check atomically; this
module only ranks.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from agent.config import PoolRules


def local_day(ts: float, tz: ZoneInfo) -> date:
    """The calendar day of instant ``ts`` in ``tz``: the day a cap counts against."""
    return datetime.fromtimestamp(ts, tz).date()


def next_midnight(ts: float, tz: ZoneInfo) -> float:
    """The instant the next local day starts (DST-safe: midnight as the zone defines it)."""
    day = local_day(ts, tz) + timedelta(days=1)
    return datetime.combine(day, time(0), tz).timestamp()


def warmup_cap(full_cap: int, promoted_day: date | None, today: date, warmup_days: int) -> int:
    """Cap of a promoted reserve number: ramps linearly to the full cap over warmup_days.

    Day 0 of promotion gets 1/(warmup_days+1) of the cap, and so on; a number never promoted,
    or past its warm-up, has its full cap. Never below 1.
    """
    if promoted_day is None or warmup_days <= 0:
        return full_cap
    age = (today - promoted_day).days
    if age >= warmup_days:
        return full_cap
    return max(1, math.ceil(full_cap * (age + 1) / (warmup_days + 1)))


def intensive_rest(
    used_today: int,
    recent_days_used: list[int],
    rules: PoolRules,
    now: float,
) -> tuple[float, float] | None:
    """Rest period earned when today just became intensive.

    ``recent_days_used`` are the counts of the days before today, most recent first. When today
    and the (days_before_rest - 1) days before it all reach the threshold, the number rests for
    rest_hours starting at the next local midnight: today's calls already placed are not cut.
    """
    if used_today != rules.intensive_threshold:
        return None  # evaluate once, on the call that makes the day intensive
    needed = rules.intensive_days_before_rest - 1
    previous = recent_days_used[:needed]
    if len(previous) < needed or any(n < rules.intensive_threshold for n in previous):
        return None
    start = next_midnight(now, rules.timezone)
    return start, start + rules.rest_hours * 3600.0


def presence_wanted(own_area: str | None, hinted_area: str | None) -> tuple[str | None, str]:
    """The area to look for first, and the reason a match gives: the callee's own number's
    area (a landline: where the patient is), else the area the dialplan passed (a mobile
    patient's postal code or département), else none (least used)."""
    if own_area is not None:
        return own_area, "local_number"
    if hinted_area is not None:
        return hinted_area, "local_area"
    return None, "least_used"


def quarantine_due(reports_today: int, rules: PoolRules) -> bool:
    return reports_today >= rules.reports_to_quarantine


LEASE_IDLE_SECONDS = 1.0  # a lease unused this long goes back to the store
LEASE_UNITS = 16  # units of a number's cap held ahead of demand, to begin with
# A number whose lease runs dry while in use gets a lease twice as large, up to this: a busy
# number must not wait for the store more often than a quiet one (the lease covers the round
# trip of its refill, however long the store or the CPU makes it).
LEASE_MAX_UNITS = 256
# A number whose lease needs refilling again this soon after its last refill was asked gets
# a lease twice as large (leasesize.py): a lease then covers about a second of its calls.
LEASE_REFILL_SECONDS = 0.5
# A lease is at most this fraction of what is left of the cap: on a busy number it saves store
# round trips; near the cap, units idle here never stand between another agent and its calls.
LEASE_SHARE = 32
# A large pool whose calls reach this many numbers not in use within a lease's idle time gets
# a unit ahead on the next this-many numbers of its rotation (ahead.py).
LEASE_AHEAD = 32
LEASE_AHEAD_MAX = 512  # numbers of one pool with a unit ahead, at the most


@dataclass(slots=True)
class NumberState:
    """What the policy knows of one number right now."""

    number: str
    home_pool: str
    name: str
    full_cap: int
    presence: str | None
    active: bool = True
    day: date | None = None  # the day ``used`` counts for
    used: int = 0
    reserved: int = 0  # claims sent to the store and not yet confirmed
    held: int = 0  # units of today's cap counted in the store, held here for the next calls
    rest_checked: date | None = None  # the day whose intensive threshold was already seen
    last_used_at: float = 0.0
    # A tuple: the empty one is shared by every number that is not resting (most of them).
    rest_windows: tuple[tuple[float, float], ...] = ()
    quarantined_until: float | None = None
    serving_pool: str | None = None  # a reserve number promoted into another pool
    promoted_day: date | None = None

    def used_on(self, today: date) -> int:
        return self.used if self.day == today else 0

    def cap_on(self, today: date, warmup_days: int) -> int:
        return warmup_cap(self.full_cap, self.promoted_day, today, warmup_days)

    def resting(self, now: float) -> bool:
        return any(start <= now < end for start, end in self.rest_windows)

    def quarantined(self, now: float) -> bool:
        return self.quarantined_until is not None and now < self.quarantined_until

    def committed(self) -> int:
        """Calls counted or on their way to be counted today (the lease held here aside)."""
        return self.used - self.held + self.reserved

    def may_claim(self, cap: int) -> bool:
        """A call can get this number now: from the lease, or the store may still have room."""
        return self.held > 0 or self.used + self.reserved < cap

    def lease_target(self, cap: int, units: int = LEASE_UNITS) -> int:
        """How many units to hold ahead of demand: ``units``, but up to 1/LEASE_SHARE of what
        is left of the cap, so a unit idle here rarely stands between another agent and its
        last calls."""
        return max(0, min(units, (cap - self.used - self.reserved) // LEASE_SHARE))

    def healthy(self, now: float) -> bool:
        """Usable in principle: active, not resting, not quarantined (cap aside)."""
        # Most numbers have no rest nor quarantine: tested inline, without a call each.
        if not self.active:
            return False
        if self.quarantined_until is not None and now < self.quarantined_until:
            return False
        return not self.rest_windows or not self.resting(now)

    def next_change(self, now: float) -> float | None:
        """When the number's health may change next (a rest or quarantine starts or ends)."""
        if not self.rest_windows and self.quarantined_until is None:
            return None
        times = [t for window in self.rest_windows for t in window if t > now]
        if self.quarantined_until is not None and self.quarantined_until > now:
            times.append(self.quarantined_until)
        return min(times) if times else None


# A heap entry: (used today, last used, insertion order, number, (pool, presence)). The
# insertion order is unique, so tuples never compare past it.
_Entry = tuple[int, float, int, str, tuple[str, str | None]]


class Selector:
    """Ranks eligible numbers per pool in O(log n): heaps with lazy deletion.

    Each number sits in its pool's heap and in its (pool, presence) heap, keyed by
    (used today, last used, insertion order). ``take`` removes the best number so concurrent
    decisions spread over different numbers while the store confirms the claim; ``put`` puts it
    back with its new key. Only a number's latest entry is live (``_live``): any other entry of
    it still in a heap is stale and skipped.
    """

    def __init__(self) -> None:
        self._heaps: dict[tuple[str, str | None], list[_Entry]] = {}
        self._live: dict[str, _Entry] = {}  # each number's entry while it may be taken
        self._order = itertools.count()
        self._pushes = 0  # entries pushed and not popped since the last compaction
        self._per_pool: dict[str, int] = {}  # numbers in each pool's heaps (O(1) counts)
        # One (pool, presence) tuple per pair, shared by every number in it (not one each).
        self._keys: dict[tuple[str, str | None], tuple[str, str | None]] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, number: str) -> bool:
        return number in self._live

    def put(
        self, number: str, pool: str, presence: str | None, used: int, last_used_at: float
    ) -> None:
        self.discard(number)
        entry = self._enter(number, pool, presence, used, last_used_at)
        self._push(self._heaps.setdefault((pool, None), []), entry)
        if presence is not None:
            self._push(self._heaps.setdefault((pool, presence), []), entry)
        if self._pushes > 4 * len(self._live) + 1024:
            self._compact()

    def _push(self, heap: list[_Entry], entry: _Entry) -> None:
        """Push, then drop stale entries from the heap's top. A number taken from one heap
        leaves a stale entry in its other one (calls served pool-wide never pop a presence
        heap), and a number's counts only grow within a day, so that entry ranks before its
        new one: it is found on top and goes here. Heaps stay near the numbers' size and the
        whole-heap compaction (a pause of the event loop at 100,000 numbers) rarely runs."""
        heapq.heappush(heap, entry)
        self._pushes += 1
        live = self._live
        while heap and live.get(heap[0][3]) is not heap[0]:
            heapq.heappop(heap)
            self._pushes -= 1

    def load(self, numbers: Iterable[tuple[str, str, str | None, int, float]]) -> None:
        """``put`` each of (number, pool, presence, used, last used) into an empty selector,
        in order: the same ranking, each heap built at once in O(n) rather than by pushes."""
        if self._live:
            raise ValueError("load fills an empty selector")
        # _enter, inlined: 100,000 numbers at every start.
        live, keys, heaps, per_pool, order = (
            self._live, self._keys, self._heaps, self._per_pool, self._order,
        )  # fmt: skip
        for number, pool, presence, used, last_used_at in numbers:
            key = (pool, presence)
            key = keys.setdefault(key, key)
            entry = live[number] = (used, last_used_at, next(order), number, key)
            per_pool[pool] = per_pool.get(pool, 0) + 1
            heaps.setdefault((pool, None), []).append(entry)
            if presence is not None:
                heaps.setdefault(key, []).append(entry)
            self._pushes += 1
        for heap in heaps.values():
            heapq.heapify(heap)

    def _enter(
        self, number: str, pool: str, presence: str | None, used: int, last_used_at: float
    ) -> _Entry:
        """A new live entry for ``number`` in (pool, presence)."""
        key = (pool, presence)
        entry = (used, last_used_at, next(self._order), number, self._keys.setdefault(key, key))
        self._live[number] = entry
        self._per_pool[pool] = self._per_pool.get(pool, 0) + 1
        return entry

    def _compact(self) -> None:
        """Drop stale entries: a heap only served through another key never pops its own, so
        memory stays proportional to the numbers, not to the calls (amortised O(1) a put)."""
        for key, heap in self._heaps.items():
            live = [e for e in heap if self._live.get(e[3]) is e]
            heapq.heapify(live)
            self._heaps[key] = live
        self._pushes = 0

    def heap_sizes(self) -> dict[tuple[str, str | None], int]:
        return {key: len(heap) for key, heap in self._heaps.items()}

    def discard(self, number: str) -> None:
        entry = self._live.pop(number, None)
        if entry is not None:
            self._per_pool[entry[4][0]] -= 1

    def discard_pool(self, pool: str) -> None:
        for number, entry in list(self._live.items()):
            if entry[4][0] == pool:
                self.discard(number)
        for key in [k for k in self._heaps if k[0] == pool]:
            del self._heaps[key]

    def take(self, pool: str, presence: str | None) -> str | None:
        """Remove and return the preferred number: local first, then the whole pool."""
        for key in ((pool, presence), (pool, None)) if presence is not None else ((pool, None),):
            heap = self._heaps.get(key)
            while heap:
                entry = heapq.heappop(heap)
                self._pushes -= 1
                number = entry[3]
                if self._live.get(number) is entry:
                    self.discard(number)
                    return number
        return None

    def count(self, pool: str) -> int:
        return self._per_pool.get(pool, 0)

    def peek(self, pool: str, count: int) -> list[str]:
        """The next ``count`` numbers ``take`` would hand out pool-wide, left in place (each
        entry goes back as it was: the same rank, the same place among equals)."""
        heap = self._heaps.get((pool, None), [])
        out: list[str] = []
        seen: list[_Entry] = []
        while heap and len(out) < count:
            entry = heapq.heappop(heap)
            if self._live.get(entry[3]) is entry:
                out.append(entry[3])
                seen.append(entry)
            else:
                self._pushes -= 1  # a stale entry: dropped
        for entry in seen:
            heapq.heappush(heap, entry)
        return out

    def ranked_as(self, number: str) -> tuple[int, float] | None:
        """The (use, last use) ``number`` is ranked by while it may be taken, else None."""
        entry = self._live.get(number)
        return None if entry is None else (entry[0], entry[1])


def plan_promotions(
    pools: dict[str, tuple[bool, int]],
    states: list[NumberState],
    now: float,
) -> list[tuple[str, str | None]]:
    """Reserve moves: [(number, pool to serve, or None to return to reserve)].

    ``pools`` maps pool name -> (is_reserve, min_active). A pool whose healthy numbers fall
    below min_active gets healthy idle reserve numbers; once its own numbers are enough again,
    the promoted ones go back to the reserve.
    """
    own_healthy: dict[str, int] = {}
    promoted: dict[str, list[NumberState]] = {}
    idle_reserve: list[NumberState] = []
    for st in states:
        if st.serving_pool is not None:
            promoted.setdefault(st.serving_pool, []).append(st)
        elif pools.get(st.home_pool, (False, 0))[0]:
            if st.healthy(now):
                idle_reserve.append(st)
        elif st.healthy(now):
            own_healthy[st.home_pool] = own_healthy.get(st.home_pool, 0) + 1
    idle_reserve.sort(key=lambda s: (s.last_used_at, s.number))
    moves: list[tuple[str, str | None]] = []
    for pool, (is_reserve, min_active) in sorted(pools.items()):
        if is_reserve:
            continue
        own = own_healthy.get(pool, 0)
        mine = promoted.get(pool, [])
        if own >= min_active:
            moves.extend((st.number, None) for st in mine)
            continue
        healthy_promoted = sum(1 for st in mine if st.healthy(now))
        deficit = min_active - own - healthy_promoted
        while deficit > 0 and idle_reserve:
            moves.append((idle_reserve.pop(0).number, pool))
            deficit -= 1
    return moves
