"""Alerts raised by several agents on one store (SQLite and PostgreSQL): the same condition seen
by two agents at once is one incident and one webhook message; resolving it from either agent
closes it once; alerts about an agent itself stay each agent's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.alerts.config import Webhook
from agent.alerts.deliver import Deliverer
from agent.alerts.service import AlertService
from agent.alerts.watch import SystemWatch
from agent.clock import FrozenClock
from agent.store import Database, open_database
from tests.postgres_schema import db, store_url
from tests.test_alerts import SECRET, Receiver, receiver

__all__ = ["db", "receiver", "store_url"]  # the contract fixtures, on both backends

HOOKS = [Webhook("http://127.0.0.1:9/hook", b"secret-for-two-agents-0123456789")]
ROUNDS = 20
MESSAGES = 30


@pytest.fixture
async def other(store_url: str, db: Database) -> AsyncIterator[Database]:
    """A second agent's connection to the same store."""
    database = await open_database(store_url)
    yield database
    await database.close()


async def _messages(db: Database) -> list[tuple[str, str]]:
    rows = await db.fetchall(
        "SELECT o.event, i.kind FROM alert_outbox o JOIN alert_incidents i"
        " ON i.id = o.incident_id ORDER BY o.id"
    )
    return [(str(r[0]), str(r[1])) for r in rows]


async def test_two_agents_raising_the_same_drift_alert_open_one_incident_and_send_once(
    db: Database, other: Database
) -> None:
    clock = FrozenClock(1_800_000_000)
    a = AlertService(db, clock, HOOKS, agent_name="pbx-a")
    b = AlertService(other, clock, HOOKS, agent_name="pbx-b")
    raises = [
        svc.raise_("number_drift", "+15550100001", f"answer rate fell ({n})")
        for n in range(ROUNDS)
        for svc in (a, b)
    ]
    results = await asyncio.gather(*raises)
    assert sum(new for _incident, new in results) == 1
    assert len({incident.id for incident, _new in results}) == 1
    incidents = await a.incidents()
    assert [(i.kind, i.subject, i.resolved_at) for i in incidents] == [
        ("number_drift", "+15550100001", None)
    ]
    assert await _messages(db) == [("raised", "number_drift")]

    # Either agent may see it clear; the incident is resolved, and announced, once.
    clock.advance(600)
    resolved = await asyncio.gather(
        a.resolve("number_drift", "+15550100001", "back to normal"),
        b.resolve("number_drift", "+15550100001", "back to normal"),
    )
    assert sorted(resolved) == [False, True]
    assert await b.incidents(open_only=True) == []
    assert await _messages(other) == [("raised", "number_drift"), ("resolved", "number_drift")]

    # Seen again later: a new incident, announced again.
    _incident, new = await b.raise_("number_drift", "+15550100001", "fell again")
    assert new
    assert len(await a.incidents()) == 2


async def test_each_agent_keeps_its_own_ami_down_incident(db: Database, other: Database) -> None:
    clock = FrozenClock(1_800_000_000)
    services = {
        "pbx-a": AlertService(db, clock, HOOKS, agent_name="pbx-a"),
        "pbx-b": AlertService(other, clock, HOOKS, agent_name="pbx-b"),
    }
    links_up = {"pbx-a": False, "pbx-b": False}

    def ami_check(name: str) -> SystemWatch:
        async def ami() -> tuple[bool, str]:
            return links_up[name], "AMI link up" if links_up[name] else "AMI link lost"

        async def store() -> tuple[bool, str]:
            return True, "store answers"

        return SystemWatch(services[name], clock, {"ami_down": ami}, store, lambda: 0.0, lambda: 10)

    watches = {name: ami_check(name) for name in services}
    await asyncio.gather(*(w.tick() for w in watches.values()))
    opened = await services["pbx-a"].incidents(open_only=True)
    assert sorted((i.kind, i.subject) for i in opened) == [
        ("ami_down", "agent@pbx-a"),
        ("ami_down", "agent@pbx-b"),
    ]

    # pbx-a's link comes back: only its incident is resolved; pbx-b's stays open.
    links_up["pbx-a"] = True
    clock.advance(30)
    await asyncio.gather(*(w.tick() for w in watches.values()))
    still_open = await services["pbx-b"].incidents(open_only=True)
    assert [(i.kind, i.subject) for i in still_open] == [("ami_down", "agent@pbx-b")]
    assert sorted(await _messages(db)) == [
        ("raised", "ami_down"),
        ("raised", "ami_down"),
        ("resolved", "ami_down"),
    ]


async def test_two_agents_deliverers_send_each_queued_message_once(
    db: Database, other: Database, receiver: Receiver
) -> None:
    clock = FrozenClock(1_800_000_000)
    hooks = [Webhook(receiver.url, SECRET)]
    service = AlertService(db, clock, hooks, agent_name="pbx-a")
    for n in range(MESSAGES):
        await service.post("report", f"weekly-{n}", {"week": n})
    deliverers = [Deliverer(store, clock, hooks, batch=4) for store in (db, other)]
    try:
        sent = [0, 0]
        while True:
            rounds = await asyncio.gather(*(d.run_once() for d in deliverers))
            if not any(rounds):
                break
            sent = [total + n for total, n in zip(sent, rounds, strict=True)]
    finally:
        for deliverer in deliverers:
            await deliverer.stop()
    # Both deliverers worked side by side; every message arrived exactly once.
    assert sum(sent) == MESSAGES and all(sent)
    assert sorted(receiver.seen) == sorted(f"weekly-{n}" for n in range(MESSAGES))


async def test_an_ami_down_left_open_by_an_older_agent_is_closed_at_start(db: Database) -> None:
    clock = FrozenClock(1_800_000_000)
    alerts = AlertService(db, clock, HOOKS, agent_name="pbx-a")
    await alerts.raise_("ami_down", "agent", "AMI link lost")  # as agents before this one did
    await alerts.raise_("pool_exhausted", "agent", "not the watch's")

    async def healthy() -> tuple[bool, str]:
        return True, "fine"

    watch = SystemWatch(alerts, clock, {"ami_down": healthy}, healthy, lambda: 0.0, lambda: 10)
    await watch.start(interval=3600)
    await watch.stop()
    still_open = await alerts.incidents(open_only=True)
    assert [(i.kind, i.subject) for i in still_open] == [("pool_exhausted", "agent")]


async def test_an_outbound_alert_without_a_pool_names_the_agent(db: Database) -> None:
    service = AlertService(db, FrozenClock(1_800_000_000), agent_name="pbx-c")
    service.raise_soon("fallback_used", None, "store too slow: fallback answered")
    await service.drain()
    assert [(i.kind, i.subject) for i in await service.incidents()] == [
        ("fallback_used", "agent@pbx-c")
    ]
