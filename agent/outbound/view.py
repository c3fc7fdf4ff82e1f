"""The outbound number view: every number's state in memory, ranked for O(log n) picks.

May: build numbers' states from what the store holds, place each in the selector when it may
be handed out, note when to look at it again (a rest or quarantine ending, midnight), list
numbers. Must not: do I/O (the service reads the store and hands the rows in) or decide
policy (agent.outbound.policy does). The store stays the source of truth: this view is
rebuilt from it whenever another process changed the shared state.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from datetime import date, datetime, time

from agent.config import Config, PoolConfig
from agent.contact.presence import number_area
from agent.outbound.policy import NumberState, Selector, local_day, next_midnight
from agent.outbound.repo import ViewRow


class PoolDays:
    """``local_day`` for each pool, remembered until its next midnight (a hot path)."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[float, float, date]] = {}  # pool -> [start, end), day

    def today(self, pool: PoolConfig, now: float) -> date:
        memo = self._memo.get(pool.name)
        if memo is not None and memo[0] <= now < memo[1]:
            return memo[2]
        tz = pool.rules.timezone
        today = local_day(now, tz)
        start = datetime.combine(today, time(0), tz).timestamp()
        self._memo[pool.name] = (start, next_midnight(now, tz), today)
        return today


def number_row(st: NumberState, pool: PoolConfig, now: float) -> dict[str, object]:
    """A number as `trustline numbers` and the API list it, in the pool it serves now."""
    today = local_day(now, pool.rules.timezone)
    cap = st.cap_on(today, pool.rules.warmup_days)
    if not st.active:
        state = "inactive"
    elif st.quarantined(now):
        state = "quarantined"
    elif st.resting(now):
        state = "resting"
    elif st.used_on(today) >= cap:
        state = "capped"
    else:
        state = "active"
    if st.serving_pool:
        state += f" (reserve from {st.home_pool})"
    return {
        "pool": pool.name,
        "number": st.number,
        "name": st.name,
        "used": st.used_on(today),
        "cap": cap,
        "state": state,
    }


def build_states(
    config: Config,
    rows: dict[str, ViewRow],
    usage: dict[tuple[str, str], int],
    rests: dict[str, tuple[tuple[float, float], ...]],
    quarantined: dict[str, float],
    days: PoolDays,
    now: float,
) -> tuple[dict[str, NumberState], list[tuple[str, str]]]:
    """Every configured number's state from what the store holds: ({number: state},
    [(number, presence key)] computed here because the store had none yet).

    One pass, each pool's day looked up once: 100,000 numbers at every start."""
    states: dict[str, NumberState] = {}
    computed: list[tuple[str, str]] = []
    pool_days = {name: days.today(pool, now) for name, pool in config.pools.items()}
    pool_isos = {name: day.isoformat() for name, day in pool_days.items()}
    areas: dict[str, str] = {}  # one string per area key, not one per number read
    for number, home_pool, name, full_cap, active in config.numbers.rows():
        row = rows.get(number)
        serving = row[0] if row is not None and row[0] in config.pools else None
        if row is not None and row[3] is not None:
            presence = areas.setdefault(row[3], row[3]) or None
        else:  # parsing is the costly part of a start: once per number, then stored
            presence = number_area(number)
            computed.append((number, presence or ""))
        pool_name = serving or home_pool
        # In field order, every field up to serving_pool: half the time of keywords, 100,000
        # times a start (mypy checks each argument's type against its field).
        st = NumberState(
            number,
            home_pool,
            name,
            full_cap,
            presence,
            active,
            pool_days[pool_name],  # day
            usage.get((number, pool_isos[pool_name]), 0),  # used
            0,  # reserved
            0,  # held
            None,  # rest_checked
            (row[2] or 0.0) if row is not None else 0.0,  # last_used_at
            rests.get(number, ()),  # rest_windows
            quarantined.get(number),  # quarantined_until
            serving,  # serving_pool
        )
        if serving and row is not None and row[1]:
            st.promoted_day = local_day(row[1], config.pools[serving].rules.timezone)
        states[number] = st
    return states, computed


# A lease held here for a day that is over or a state replaced: (number, day, units) to uncount.
StaleLease = Callable[[str, date | None, int], None]


class NumberView:
    """Every configured number's state, the selector ranking those that may be handed out, and
    a heap of the times a number must be looked at again."""

    def __init__(self, config: Config, on_stale_lease: StaleLease) -> None:
        self.config = config
        self.states: dict[str, NumberState] = {}
        self.selector = Selector()
        self.version = -1  # the store's state version this view was read at
        # Pools whose health (usable numbers) may have changed since promotions were planned:
        # health is re-planned for these only, when an event changes it, never on a timer.
        self.dirty_pools: set[str] = set()
        self._on_stale_lease = on_stale_lease
        self._days = PoolDays()
        self._pool_day: dict[str, date] = {}
        self._wakeups: list[tuple[float, str]] = []
        self._wake_at: dict[str, float] = {}  # the wake-up queued for each number
        self._members: dict[str, list[NumberState]] = {}  # numbers by home pool

    def pool_of(self, st: NumberState) -> PoolConfig:
        return self.config.pools[st.serving_pool or st.home_pool]

    def today(self, pool: PoolConfig, now: float) -> date:
        return self._days.today(pool, now)

    def members(self, pools: Iterable[str]) -> list[NumberState]:
        """The numbers whose home is one of ``pools``."""
        return [st for name in pools for st in self._members.get(name, ())]

    def swap(
        self,
        config: Config,
        states: dict[str, NumberState],
        days: PoolDays,
        version: int,
        now: float,
    ) -> None:
        """Take a view just built from the store. A lease held here carries over to the new
        state of its number for the same day (the rows read count it); any other is stale."""
        for number, old in self.states.items():
            new = states.get(number)
            if not old.held:
                continue
            if new is not None and new.day == old.day:
                new.held = old.held  # counted in the rows just read: still ours to hand out
                new.used = max(new.used, old.used)
            else:
                self._on_stale_lease(number, old.day, old.held)
        self.config, self.states, self._days, self.version = config, states, days, version
        self.selector = Selector()
        self._wakeups = []
        self._wake_at = {}
        self._members = {name: [] for name in config.pools}
        for st in self.states.values():
            self._members[st.home_pool].append(st)  # every number's home is one of the pools
        self.dirty_pools = set(self.config.pools)
        self._pool_day = {name: self.today(p, now) for name, p in self.config.pools.items()}
        self.selector.load(
            (st.number, pool.name, st.presence, st.committed(), st.last_used_at)
            for st, pool in ((st, self._check(st, now)) for st in self.states.values())
            if pool is not None
        )

    def place(self, st: NumberState, now: float) -> None:
        """Put a number in the selector if it may be handed out now, else note when to look."""
        self.selector.discard(st.number)
        pool = self._check(st, now)
        if pool is not None:
            self.selector.put(st.number, pool.name, st.presence, st.committed(), st.last_used_at)

    def _check(self, st: NumberState, now: float) -> PoolConfig | None:
        """Roll the number's day, note when to look at it again; its pool if it may be handed
        out now, else None."""
        pool = self.pool_of(st)
        today = self.today(pool, now)
        if st.day != today:
            if st.held:  # yesterday's lease: uncounted, so yesterday's count stays exact
                self._on_stale_lease(st.number, st.day, st.held)
            st.day, st.used, st.held = today, 0, 0
        wake = st.next_change(now)
        if wake is not None and self._wake_at.get(st.number) != wake:
            self._wake_at[st.number] = wake
            heapq.heappush(self._wakeups, (wake, st.number))
        if not st.healthy(now) or not st.may_claim(st.cap_on(today, pool.rules.warmup_days)):
            return None
        return pool

    def look_at(self, number: str, when: float) -> None:
        """Place ``number`` again at ``when`` (a rest decided here starts then)."""
        heapq.heappush(self._wakeups, (when, number))

    def roll_days(self, now: float) -> None:
        """At a pool's local midnight every count restarts at zero: re-rank that pool; and
        place again the numbers whose rest or quarantine ended."""
        for name, pool in self.config.pools.items():
            today = self._days.today(pool, now)  # kept until the pool's next midnight
            if self._pool_day.get(name) != today:
                self._pool_day[name] = today
                self.selector.discard_pool(name)
                self.dirty_pools.add(name)
                for st in self.states.values():
                    if self.pool_of(st).name == name:
                        self.place(st, now)
        while self._wakeups and self._wakeups[0][0] <= now:
            wake, number = heapq.heappop(self._wakeups)
            if self._wake_at.get(number) == wake:
                del self._wake_at[number]
            woken = self.states.get(number)
            if woken is not None:
                self.dirty_pools.add(self.pool_of(woken).name)  # a rest or quarantine ends
                self.place(woken, now)

    def usable_by_pool(self) -> dict[str, int]:
        return {name: self.selector.count(name) for name in self.config.pools}

    def rows(self, now: float) -> list[dict[str, object]]:
        ordered = sorted(
            self.states.values(), key=lambda s: (s.serving_pool or s.home_pool, s.number)
        )
        return [number_row(st, self.pool_of(st), now) for st in ordered]
