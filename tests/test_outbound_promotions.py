"""Reserve promotions decided by the store: two agents (two OutboundService objects on one
store, SQLite and PostgreSQL) never both promote a reserve number, and end with one state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.clock import FrozenClock
from agent.config import parse_config
from agent.outbound.repo import OutboundRepo
from agent.outbound.service import OutboundService
from agent.store import Database, open_database
from tests.postgres_schema import db, store_url

__all__ = ["db", "store_url"]  # the contract fixtures, on both backends

KEY = b"k" * 32
POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = 80
reports_to_quarantine = 1

[pools.reminders]
purposes = ["reminder"]
fallback = "+33142000001"
min_active = 2
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc" },
]

[pools.reserve]
reserve = true
numbers = [
  { number = "+33142990001", name = "Clinique Resrv" },
  { number = "+33142990002", name = "Clinique Resrv" },
]
"""


@pytest.fixture
async def agents(
    store_url: str, db: Database, clock: FrozenClock
) -> AsyncIterator[tuple[OutboundService, OutboundService]]:
    """Two agents' outbound services on one store, each with its own connection."""
    other = await open_database(store_url)
    first = OutboundService(db, clock, parse_config(POOLS), KEY)
    second = OutboundService(other, clock, parse_config(POOLS), KEY)
    await first.start(watch_interval=None)
    await second.start(watch_interval=None)
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()
        await other.close()


async def serving(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetchall(
        "SELECT number, serving_pool FROM numbers WHERE serving_pool IS NOT NULL ORDER BY number"
    )
    return [(str(r[0]), str(r[1])) for r in rows]


async def promotion_alerts(db: Database) -> int:
    row = await db.fetchone("SELECT COUNT(*) FROM alerts WHERE kind = 'reserve_promoted'")
    assert row is not None
    return int(row[0])


async def test_two_agents_promote_one_reserve_number_once_and_agree(
    db: Database, agents: tuple[OutboundService, OutboundService]
) -> None:
    first, second = agents
    # Each agent's AMI link carries its own spam report against +33142000001: each agent
    # quarantines it from its own view and plans the same promotion for the same shortfall.
    assert (await first.report_spam("+33142000001", "ivr")).quarantined
    await second.report_spam("+33142000001", "agent")

    # The store took one promotion: one reserve number, promoted once, one alert.
    assert await serving(db) == [("+33142990001", "reminders")]
    assert await promotion_alerts(db) == 1
    # The agent that lost adopted the store's state: both list the same pools and states.
    rows = first.number_rows()
    assert second.number_rows() == rows
    by_number = {r["number"]: r for r in rows}
    assert by_number["+33142990001"]["pool"] == "reminders"
    assert by_number["+33142990001"]["state"] == "active (reserve from reserve)"
    assert by_number["+33142990002"]["pool"] == "reserve"
    for agent in (first, second):
        decision = await agent.decide("reminder", "0612345678")
        assert decision.number in {"+33142000002", "+33142990001"}


async def test_concurrent_re_plans_promote_once_and_send_back_once(
    db: Database, agents: tuple[OutboundService, OutboundService]
) -> None:
    first, second = agents
    await db.execute(
        "INSERT INTO quarantines (number, since, until, reason) VALUES (?, 0, 9e12, 'test')",
        ("+33142000002",),
    )
    await db.execute("UPDATE state_version SET version = version + 1 WHERE id = 1")
    # Both agents notice the change at once (their watch) and plan from the same version.
    await asyncio.gather(first.reload_state(), second.reload_state())
    assert await serving(db) == [("+33142990001", "reminders")]
    assert await promotion_alerts(db) == 1
    assert first.number_rows() == second.number_rows()

    # The pool is whole again: the reserve number goes back once, seen by both.
    await first.reinstate("+33142000002")
    await second.reload_state()
    assert await serving(db) == []
    assert first.number_rows() == second.number_rows()
    assert {r["number"]: r["pool"] for r in first.number_rows()}["+33142990001"] == "reserve"


async def test_a_plan_from_a_stale_state_writes_nothing(store_url: str, db: Database) -> None:
    other = await open_database(store_url)
    try:
        first, second = OutboundRepo(db), OutboundRepo(other)
        await first.sync_numbers([("+33142000001", "A", True), ("+33142990001", "R", True)])
        seen = await second.state_version()
        move = [("+33142990001", None, "A")]
        assert await first.move_reserves(move, 50.0, seen)
        assert not await second.move_reserves(move, 60.0, seen)  # the other agent, same plan
        assert not await second.move_reserves([("+33142990001", None, "B")], 60.0, seen)
        # A number moved without a version bump (a config sync): nothing of the plan is kept.
        await first.set_serving_pool("+33142000001", "R", 70.0)
        both = [("+33142990001", "A", None), ("+33142000001", None, "A")]
        assert not await second.move_reserves(both, 80.0, seen + 1)
        assert await second.state_version() == seen + 1
        rows = {r.number: (r.serving_pool, r.promoted_at) for r in await second.numbers()}
        assert rows == {"+33142990001": ("A", 50.0), "+33142000001": ("R", 70.0)}
    finally:
        await other.close()
