"""Which transactions wait for which on PostgreSQL, with two agents (two Database objects) on
one schema: the same named lock serialises, the store-wide default serialises every agent's
transactions as before, and an alert (atomic statements, no lock) never waits for another
agent's unrelated transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from agent.alerts.service import AlertService
from agent.clock import FrozenClock
from agent.store import Database, open_database
from tests.postgres_schema import fresh_schema
from tests.test_ami_link import eventually

BOUND = 20.0  # a deadlock guard, not a speed goal: the awaited step is either free or stuck


@pytest.fixture
async def two_agents() -> AsyncIterator[tuple[Database, Database, str]]:
    async for url in fresh_schema():
        first = await open_database(url)
        second = await open_database(url)
        try:
            yield first, second, url
        finally:
            await first.close()
            await second.close()


async def _hold(db: Database, lock: str, entered: asyncio.Event, release: asyncio.Event) -> None:
    async with db.transaction(lock):
        entered.set()
        await release.wait()


async def _waiting_for_advisory_lock(url: str) -> None:
    """Return once a session waits for an advisory lock of this schema (the second key)."""
    admin = await asyncpg.connect(url)

    async def waiting() -> int:
        return int(
            await admin.fetchval(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = (hashtext(current_schema())::bigint & 4294967295)::oid"
            )
        )

    try:
        await eventually(waiting, within=BOUND)
    finally:
        await admin.close()


@pytest.mark.parametrize("lock", ["store", "spam:+33142000002"])
async def test_two_agents_transactions_on_one_lock_take_turns(
    two_agents: tuple[Database, Database, str], lock: str
) -> None:
    first, second, url = two_agents
    release = asyncio.Event()
    first_in, second_in = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(_hold(first, lock, first_in, release))
    await first_in.wait()
    waiter = asyncio.create_task(_hold(second, lock, second_in, asyncio.Event()))
    await _waiting_for_advisory_lock(url)
    assert not second_in.is_set()  # the second agent waits for the first one's transaction
    release.set()
    await holder
    async with asyncio.timeout(BOUND):
        await second_in.wait()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_an_alert_does_not_wait_for_another_agents_transaction(
    two_agents: tuple[Database, Database, str],
) -> None:
    first, second, _url = two_agents
    release, entered = asyncio.Event(), asyncio.Event()
    # Agent one holds a store-wide transaction open (a slow admin change, a recordings batch).
    holder = asyncio.create_task(_hold(first, "store", entered, release))
    await entered.wait()
    try:
        alerts = AlertService(second, FrozenClock(1_800_000_000), agent_name="pbx-b")
        async with asyncio.timeout(BOUND):
            _incident, new = await alerts.raise_("number_drift", "+33142000002", "fell")
            assert new
            assert await alerts.resolve("number_drift", "+33142000002", "back")
            # A different named lock is free too.
            async with second.transaction("spam:+33142000002"):
                pass
    finally:
        release.set()
        await holder
