"""Units leased ahead of a large pool's calls (agent/outbound/ahead.py), on the rig of
tests/test_outbound_leases.py: the real claims, view and repo on a SQLite file, the store
answering when the test says so. Nothing here sleeps or measures time.

What an operator sees: in a pool of hundreds of numbers, least-used rotation hands out each
number once before any comes back, so without units ahead every call waits for a store round
trip of its own. With them, calls coming fast take their numbers from units counted ahead, the
numbers handed out are the very ones the rotation gives, and the store counts exactly the
calls once idle units go back. Slow traffic gets no units ahead (they would go back unused).
"""

from __future__ import annotations

from agent.outbound.policy import LEASE_AHEAD
from tests import test_outbound_leases as leases
from tests.test_outbound_leases import RigFactory

make_rig = leases.make_rig  # the rig's fixture, shared

NUMBERS = [f"+331420{i:05d}" for i in range(400)]  # Paris landlines, one pool


async def test_a_large_pools_fast_calls_take_their_numbers_from_units_leased_ahead(
    make_rig: RigFactory,
) -> None:
    rig = await make_rig(100, NUMBERS)
    waited = 0
    handed = []
    for i in range(300):
        if i % 8 == 0:
            await rig.land()  # the store answers what is on its way every 8 calls
        before = len(rig.store.round_trips)
        number = await rig.call()
        waited += len(rig.store.round_trips) > before and rig.store.round_trips[-1][0][0] == number
        handed.append(number)
    # The rotation is unchanged: each call gets the next least-used number, in the pool's order.
    assert handed == NUMBERS[:300]
    # The first LEASE_AHEAD - 1 calls wait for their claim (the traffic is not known to be fast
    # yet); from then on the calls find a unit ahead on their number, asked in batches.
    assert waited == LEASE_AHEAD - 1 or waited == LEASE_AHEAD, waited
    assert len(rig.store.round_trips) < 300 // 4, len(rig.store.round_trips)
    assert all(units == 1 for trip in rig.store.round_trips for *_, units in trip[1:])
    # Units ahead that no call used go back: the store counts exactly the calls.
    counts = await rig.return_leases()
    assert {n: c for n, c in counts.items() if c} == dict.fromkeys(NUMBERS[:300], 1)


async def test_slow_calls_on_a_large_pool_get_no_units_ahead(make_rig: RigFactory) -> None:
    rig = await make_rig(100, NUMBERS)
    for _ in range(100):
        rig.clock.advance(0.1)  # 10 calls a second: fewer than LEASE_AHEAD within a second
        rig.now = rig.clock.now()
        await rig.call()
    # One round trip per call, for that call's number alone: no unit asked for no call.
    assert len(rig.store.round_trips) == 100
    assert all(len(trip) == 1 and trip[0][3] == 1 for trip in rig.store.round_trips)
    assert sum((await rig.store_counts()).values()) == 100
