"""Patient contact's tables on every backend (SQLite file, PostgreSQL schema), two agents on
one store: an SMS is leased to one sender at a time; one open pin per callee and purpose; the
CNAM registry keeps the latest provisioning."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.contact.repo import ContactRepo, Pin
from agent.errors import StoreError
from agent.store import Database, open_database
from tests.postgres_schema import fresh_schema


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trustline.sqlite3'}"
        return
    async for url in fresh_schema():
        yield url


@pytest.fixture
async def two(store_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two agents on one store."""
    first = await open_database(store_url)
    second = await open_database(store_url)
    yield first, second
    await second.close()
    await first.close()


async def test_an_sms_is_leased_to_one_agent(two: tuple[Database, Database]) -> None:
    a, b = ContactRepo(two[0]), ContactRepo(two[1])
    assert await a.enqueue("pin-1", "reminder", "reminders", "h", "sealed", 100.0, 100.0, 900.0)
    assert not await b.enqueue("pin-1", "reminder", "reminders", "h", "sealed", 100.0, 100.0, 900.0)
    [row] = await a.claim_due(100.0, 220.0, 10)
    assert await b.claim_due(150.0, 270.0, 10) == []  # leased to the first agent
    assert [r.id for r in await b.claim_due(221.0, 340.0, 10)] == [row.id]  # lease ran out
    await b.sent(row.id, 222.0, "SM1")
    [state] = await a.outbox()
    assert state["sealed"] in (0, False) and state["provider_ref"] == "SM1"
    assert await a.next_due() is None


async def test_one_open_pin_per_callee_and_purpose(two: tuple[Database, Database]) -> None:
    a, b = ContactRepo(two[0]), ContactRepo(two[1])
    pin = Pin(
        0, "h", "reminder", "reminders", "+33142000001", None, 1.0, 2.0, 90.0, "2026-11-17", None
    )
    first = await a.add_pin(pin)
    with pytest.raises(StoreError):
        await b.add_pin(pin)  # another agent cannot open a second one
    assert await b.release(first, 5.0, "used") and not await a.release(first, 6.0, "expired")
    await b.add_pin(pin)  # once released, a new one may open
    assert [p.number for p in await a.open_pins()] == ["+33142000001"]
    assert await a.recent_pins(0.0) == {"h": 1.0}


async def test_cnam_latest_provisioning(two: tuple[Database, Database]) -> None:
    a, b = ContactRepo(two[0]), ContactRepo(two[1])
    await a.add_provisioned("+33142000001", "StMarc", 10.0, 11.0)
    await b.add_provisioned("+33142000001", "Clinique StMarc", 20.0, 21.0)
    assert await a.latest_provisioned() == {"+33142000001": ("Clinique StMarc", 20.0)}
