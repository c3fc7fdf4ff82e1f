"""Leases of cap units on busy numbers (agent/outbound/claims.py), with the store answering
when the test says so.

The real ``Claims``, ``ClaimBatcher``, ``NumberView`` and ``OutboundRepo`` on a SQLite file;
``SlowStore`` is the repo whose round trips can be held at a gate until the test lands them,
so a refill is "on its way" for as many calls as the test decides. A call served from a lease
never yields to the event loop: between two ``Rig.land`` the agent's round trips do not move,
whatever the machine's speed. Nothing here sleeps or measures time.

What an operator sees: how many store round trips a burst needs, whether a call waited for
the store, how calls spread over the numbers, what the store counts (exactly the calls handed
a number once the leases are back, never above the cap), and whether a call is answered
``exhausted`` (``claim_from`` returning None) while units are on their way to the agent.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.clock import FrozenClock
from agent.config import PoolConfig, parse_config
from agent.outbound.claims import Claims
from agent.outbound.policy import (
    LEASE_MAX_UNITS,
    LEASE_REFILL_SECONDS,
    LEASE_SHARE,
    LEASE_UNITS,
    NumberState,
)
from agent.outbound.repo import OutboundRepo
from agent.outbound.view import NumberView, PoolDays, build_states
from agent.store import Database, open_database

PARIS_NUMBER = "+33142000001"  # presence FR-75
LYON_NUMBER = "+33472000003"  # presence FR-69


@dataclass
class RoundTrip:
    """One grant_many held at the gate: ``land`` lets it through and returns once the agent
    has taken its answer in (the answered event is set just before grant_many returns, and the
    batcher hands the answer on without yielding, before this test resumes)."""

    rows: list[tuple[str, str, int, int]]
    go: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    async def land(self) -> None:
        self.go.set()
        await self.answered.wait()


class SlowStore(OutboundRepo):
    """The real repo; while ``gated``, each round trip waits at the gate for the test."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.round_trips: list[list[tuple[str, str, int, int]]] = []
        self.gated = False
        self._at_gate: asyncio.Queue[RoundTrip] = asyncio.Queue()

    async def grant_many(
        self, claims: Sequence[tuple[str, str, int, int]]
    ) -> dict[str, tuple[int, int]]:
        self.round_trips.append(list(claims))
        trip = None
        if self.gated:
            trip = RoundTrip(list(claims))
            self._at_gate.put_nowait(trip)
            await trip.go.wait()
        try:
            return await super().grant_many(claims)
        finally:
            if trip is not None:
                trip.answered.set()

    async def next_round_trip(self) -> RoundTrip:
        """The next round trip the agent sends, held at the gate."""
        return await self._at_gate.get()


@dataclass
class Rig:
    db: Database
    store: SlowStore
    view: NumberView
    claims: Claims
    pool: PoolConfig
    clock: FrozenClock
    now: float
    day: str
    handed: Counter[str] = field(default_factory=Counter)

    def state(self, number: str) -> NumberState:
        return self.view.states[number]

    async def call(self, presence: str | None = None) -> str | None:
        """One call's decision: its number, or None (the pool is answered exhausted)."""
        st = await self.claims.claim_from(self.pool, presence, self.now)
        if st is None:
            return None
        self.handed[st.number] += 1
        return st.number

    async def start_call(self) -> asyncio.Task[str | None]:
        """A call started now; returns once it took its number from a lease, or sent its claim
        or began waiting (it runs until it first waits before this test resumes)."""
        asked = asyncio.Event()

        async def call() -> str | None:
            asked.set()
            return await self.call()

        task = asyncio.create_task(call())
        await asked.wait()
        return task

    def later(self, seconds: float) -> None:
        """The calls that follow come ``seconds`` later."""
        self.clock.advance(seconds)
        self.now = self.clock.now()

    def next_morning(self) -> None:
        """Nine o'clock the next day: every count starts again at zero (as decide does)."""
        self.clock.advance(24 * 3600)
        self.now = self.clock.now()
        self.view.roll_days(self.now)
        self.day = self.view.today(self.pool, self.now).isoformat()
        self.handed.clear()

    async def land(self) -> None:
        """The store answers everything on its way now (the store must not be gated)."""
        await self.claims.drain()

    async def store_counts(self) -> dict[str, int]:
        rows = await self.db.fetchall(
            "SELECT number, used FROM daily_usage WHERE day = ?", (self.day,)
        )
        return {r[0]: int(r[1]) for r in rows}

    async def return_leases(self) -> dict[str, int]:
        """What the store counts once every unit held here went back (as at stop)."""
        await self.claims.drain()
        await self.claims.return_leases()
        return await self.store_counts()


def pool_toml(cap: int, numbers: Sequence[str]) -> str:
    entries = ", ".join(f'{{ number = "{n}", name = "Clinique" }}' for n in numbers)
    return f"""
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = {cap}

[pools.reminders]
purposes = ["reminder"]
fallback = "{numbers[0]}"
numbers = [ {entries} ]
"""


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[RigFactory]:
    """Build an agent's number view and claims (as OutboundService does) on a fresh store."""
    opened: list[Database] = []

    async def factory(cap: int, numbers: Sequence[str] = (PARIS_NUMBER,)) -> Rig:
        config = parse_config(pool_toml(cap, numbers))
        db = await open_database(tmp_path / "store.db")
        opened.append(db)
        store = SlowStore(db)
        await store.sync_numbers([(n.number, n.pool, n.active) for n in config.numbers.values()])
        now, days = clock.now(), PoolDays()
        claims: list[Claims] = []
        view = NumberView(config, lambda number, d, units: claims[0].drop_lease(number, d, units))
        claims.append(Claims(view, store, clock, lambda *handed: None))
        states, _ = build_states(config, await store.view_rows(), {}, {}, {}, days, now)
        view.swap(config, states, days, 0, now)
        pool = config.pools["reminders"]
        day = view.today(pool, now).isoformat()
        return Rig(db, store, view, claims[0], pool, clock, now, day)

    yield factory
    for db in reversed(opened):
        await db.close()


@dataclass
class Burst:
    round_trips: int
    waited: list[int]  # the calls (by index) that waited for the store
    ahead: list[tuple[int, int]]  # (units counted ahead of the calls, calls handed) at each answer


async def burst(rig: Rig, calls: int, answer_every: int, pace: float = 0.1) -> Burst:
    """``calls`` calls on the rig's one number, ``pace`` seconds apart, the store answering
    what is on its way every ``answer_every`` calls (a refill's round trip lasts that many
    calls). A call that finds the lease dry waits for its claim (and the refill on its way
    lands with it). At the default pace, a lease of 16 lasts longer than LEASE_REFILL_SECONDS:
    only a slow store makes it grow."""
    number = PARIS_NUMBER
    first_trip = len(rig.store.round_trips)
    waited: list[int] = []
    ahead: list[tuple[int, int]] = []
    for i in range(calls):
        if i % answer_every == 0:
            await rig.land()
            counted = (await rig.store_counts()).get(number, 0)
            ahead.append((counted - rig.handed[number], rig.handed[number]))
        before = len(rig.store.round_trips)
        assert await rig.call() == number
        if len(rig.store.round_trips) > before:
            waited.append(i)
        rig.later(pace)
    await rig.land()
    return Burst(len(rig.store.round_trips) - first_trip, waited, ahead)


async def test_a_number_called_fast_gets_a_lease_for_about_a_second_of_its_calls(
    make_rig: RigFactory,
) -> None:
    """200 calls a second on one number, the store answering at once: a lease of 16 would
    need a refill every 8 calls (250 statements on the store's thread for 2,000 calls). Its
    refills coming faster than every LEASE_REFILL_SECONDS, the lease doubles until it covers
    about a second of calls (256 units, refilled every 128 calls)."""
    rig = await make_rig(100_000)
    run = await burst(rig, 2000, answer_every=1, pace=0.005)
    assert run.round_trips <= 30, run.round_trips
    units_ahead = [units for units, _ in run.ahead]
    assert 4 * LEASE_UNITS < max(units_ahead) <= LEASE_MAX_UNITS
    assert await rig.return_leases() == {PARIS_NUMBER: 2000}


async def test_a_number_called_at_a_steady_pace_keeps_a_small_lease(
    make_rig: RigFactory,
) -> None:
    """Ten calls a second: a lease of 16 lasts 0.8 s between refills. It stays at 16, so a
    number holds few units another agent may want."""
    rig = await make_rig(100_000)
    run = await burst(rig, 400, answer_every=1, pace=0.1)
    assert max(units for units, _ in run.ahead) <= LEASE_UNITS
    assert 45 <= run.round_trips <= 55, run.round_trips  # a refill every 8 calls
    assert await rig.return_leases() == {PARIS_NUMBER: 400}


@pytest.mark.parametrize("cap", [20_000, 6_000])
async def test_a_busy_numbers_lease_grows_until_its_calls_stop_waiting_for_the_store(
    make_rig: RigFactory, cap: int
) -> None:
    rig = await make_rig(cap)
    run = await burst(rig, 2000, answer_every=40)
    # A lease of 16, refilled with 8 left, lasts 8 calls: a store answering every 40 calls
    # would make about 1 call in 12 wait for it (218 round trips, 168 calls waiting, measured
    # with the lease kept at 16). Doubled each time its refill lands after a quarter of it was
    # spent meanwhile, the lease soon covers the round trip: a few calls wait at first
    # (the first two, before any lease, and three while it grows), then none.
    assert run.round_trips <= 40, run
    assert len(run.waited) <= 6 and max(run.waited) < 100, run.waited
    units_ahead = [units for units, _ in run.ahead]
    assert max(units_ahead) > 4 * LEASE_UNITS
    # Never more than LEASE_MAX_UNITS, nor than 1/LEASE_SHARE of what the calls left of the cap.
    assert max(units_ahead) <= LEASE_MAX_UNITS
    assert all(units * LEASE_SHARE <= cap - handed for units, handed in run.ahead), run.ahead
    # The store counts exactly the calls once the lease is back.
    assert await rig.return_leases() == {PARIS_NUMBER: 2000}


async def test_an_idle_lease_goes_back_and_starts_again_at_16_units(
    make_rig: RigFactory,
) -> None:
    cap = 20_000
    rig = await make_rig(cap)
    run = await burst(rig, 1000, answer_every=40)
    assert run.ahead[-1][0] > 8 * LEASE_UNITS  # the lease grew (to LEASE_MAX_UNITS)
    # The number goes quiet: its lease goes back to the store, which counts the calls exactly.
    rig.claims.release_idle(0.0)
    await rig.claims.give_back_now()
    assert await rig.store_counts() == {PARIS_NUMBER: 1000}
    # Busy again within a lease's idle time: the call's claim brings a lease of 16, not of the
    # size it had grown to, so a number quiet for a while holds few units other agents may want.
    assert await rig.call() == PARIS_NUMBER
    assert rig.store.round_trips[-1] == [(PARIS_NUMBER, rig.day, cap, 1 + LEASE_UNITS)]
    assert await rig.store_counts() == {PARIS_NUMBER: 1001 + LEASE_UNITS}
    assert await rig.return_leases() == {PARIS_NUMBER: 1001}


async def test_a_refill_on_its_way_does_not_crowd_calls_onto_the_other_numbers(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(20_000, (PARIS_NUMBER, LYON_NUMBER))
    paris, lyon = rig.state(PARIS_NUMBER).presence, rig.state(LYON_NUMBER).presence
    assert paris != lyon
    for presence in (paris, paris, lyon, lyon):  # local callees: each number gets a lease of 16
        assert await rig.call(presence) is not None
    for _ in range(8):  # Lyon's lease half spent: its refill is asked...
        assert await rig.call(lyon) == LYON_NUMBER
    await rig.land()  # ...and lands
    for _ in range(8):  # Paris's lease half spent: its refill is asked, and stays on its way
        assert await rig.call(paris) == PARIS_NUMBER
    assert rig.handed == {PARIS_NUMBER: 10, LYON_NUMBER: 10}
    # Callees from elsewhere get the least used number: both handed 10 calls, so they alternate.
    # Were Paris's refill counted as used while on its way, Paris would rank 8 calls higher and
    # all 8 would go to Lyon, emptying its lease in turn.
    spread = Counter([await rig.call() for _ in range(8)])
    assert spread == {PARIS_NUMBER: 4, LYON_NUMBER: 4}
    await rig.land()
    assert await rig.return_leases() == {PARIS_NUMBER: 14, LYON_NUMBER: 14}


async def test_a_call_waits_for_a_refill_bringing_the_last_units_rather_than_exhausted(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """Two agents on one number: this one learns the number is full while its refill is on
    its way; the other agent's idle lease then goes back, and the refill takes those last
    units. A call made meanwhile waits for the refill: it gets the number, not 'exhausted'."""
    cap = 1000
    rig = await make_rig(cap)
    number, st = PARIS_NUMBER, rig.state(PARIS_NUMBER)
    # The other agent, as the store sees it: its own connection, its claims and give-backs.
    other = OutboundRepo(await open_database(tmp_path / "store.db"))
    try:
        for _ in range(2):  # a claim, then a claim with a lease of 16
            assert await rig.call() == number
        rig.later(LEASE_REFILL_SECONDS)  # calls at a pace a lease of 16 keeps up with
        rig.store.gated = True
        for _ in range(8):  # half the lease spent: a refill is asked, and held at the gate
            assert await rig.call() == number
        first_refill = await rig.store.next_round_trip()
        assert first_refill.rows == [(number, rig.day, cap, LEASE_UNITS // 2)]
        for _ in range(8):
            assert await rig.call() == number
        claiming = await rig.start_call()  # the lease is dry: a claim, queued behind the refill
        await first_refill.land()  # 8 units; the queued claim goes out
        claim = await rig.store.next_round_trip()
        # Meanwhile the other agent's calls take all that is left but 2, held in its lease.
        ours_counted = 2 + LEASE_UNITS + LEASE_UNITS // 2
        taken = await other.grant_many([(number, rig.day, cap, cap)])
        assert taken[number] == (cap, cap - ours_counted)
        assert await rig.call() == number  # from the lease: a second refill is asked
        await claim.land()  # the store is full: no unit for the claim...
        assert await claiming == number  # ...whose call takes one from the lease instead
        second_refill = await rig.store.next_round_trip()
        while st.held:  # the lease runs dry; the number is full as far as this agent knows
            assert await rig.call() == number
        await other.give_back(number, rig.day, 2)  # the other agent's lease went idle
        waiting = await rig.start_call()
        # Not answered 'exhausted' (None) at once: the refill on its way may bring units.
        assert not waiting.done(), f"answered {waiting.result()} with a refill on its way"
        await second_refill.land()  # it does: the last 2 units
        assert await waiting == number
        ours = sum(rig.handed.values())
        counts = await rig.return_leases()
        assert counts == {number: ours + cap - ours_counted - 2}  # ours and the other agent's
        assert counts[number] <= cap
    finally:
        await other.db.close()


async def test_a_lease_that_ran_dry_at_the_cap_starts_the_next_day_at_16_units(
    make_rig: RigFactory, tmp_path: Path
) -> None:
    """Its lease grown, a number's cap is used up (the other agent took the rest): its last
    refill brings nothing and its lease runs dry, so no lease is left to go idle. The next
    day it is quiet until a burst starts: its first lease is 16 units again, not the size it
    had grown to the day before (which would count up to 256 units for this agent at once)."""
    cap = 20_000
    rig = await make_rig(cap)
    number, st = PARIS_NUMBER, rig.state(PARIS_NUMBER)
    run = await burst(rig, 1000, answer_every=40)
    assert run.ahead[-1][0] > 8 * LEASE_UNITS  # the lease grew (to LEASE_MAX_UNITS)
    other = OutboundRepo(await open_database(tmp_path / "store.db"))
    try:
        await other.grant_many([(number, rig.day, cap, cap)])  # the rest of today's cap
    finally:
        await other.db.close()
    while st.held:
        assert await rig.call() == number
    await rig.land()  # the refill asked meanwhile: no unit left in the store
    assert st.held == 0
    rig.claims.release_idle(0.0)  # the watch, every second all night
    rig.next_morning()
    assert [await rig.call() for _ in range(2)] == [number, number]
    # The second call is within a lease's idle time of the first: its claim brings a lease.
    assert rig.store.round_trips[-1] == [(number, rig.day, cap, 1 + LEASE_UNITS)]
    assert await rig.return_leases() == {number: 2}
