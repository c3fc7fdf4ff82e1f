"""The drift service on a real store: a flagged number is alerted once, rested by its pool's
policy, looked up at the provider at once, and its alert resolves when its rate is back."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.alerts.service import AlertService
from agent.clock import FrozenClock
from agent.outcomes.config import DriftFields, PoolDriftFields
from agent.outcomes.drift import OnDrift
from agent.outcomes.service import OutcomesService, drift_tunables
from agent.reputation.providers import HttpJsonProvider
from agent.reputation.scanner import ReputationScanner
from agent.store.db import Database, open_database
from tests.test_reputation import Provider, provider, provider_config

__all__ = ["provider"]  # the fake reputation provider fixture

NUMBERS = [f"+3314200{i:04d}" for i in range(20)]
FLAGGED = NUMBERS[5]
UTC = ZoneInfo("UTC")
DAY = 86400.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(0.0)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "store.db")
    yield database
    await database.close()


async def feed(
    service: OutcomesService, clock: FrozenClock, rng: random.Random, days: range, low: str | None
) -> None:
    calls = sorted(
        (day * DAY + rng.uniform(10 * 3600, 20 * 3600), number)
        for day in days
        for number in NUMBERS
        for _ in range(80)
    )
    for at, number in calls:
        rate = 0.1 if number == low else 0.42
        outcome = "answered" if rng.random() < rate else rng.choice(["no_answer", "busy"])
        clock.set(at + 60)  # the AMI link hands the call over as it ends
        await service.call_ended(at, "reminders", number, outcome, 60)
    # Calls that say nothing about the number are not counted against it.
    for _ in range(200):
        await service.call_ended(calls[-1][0], "reminders", low, "cancelled", 0)


async def test_a_flagged_number_is_alerted_rested_looked_up_and_resolved(
    tmp_path: Path, db: Database, clock: FrozenClock, provider: tuple[Provider, str]
) -> None:
    fake, url = provider
    alerts = AlertService(db, clock)
    scanner = ReputationScanner(db, clock, alerts)
    # Weekly scans from t=0: FLAGGED's scheduled check (day 1.75) is far from the tick below.
    scanner.configure(dict.fromkeys(NUMBERS, "reminders"), {}, HttpJsonProvider(
        provider_config(tmp_path, url)), scan_minutes=7 * 24 * 60)  # fmt: skip
    service = OutcomesService(db, clock, alerts, scanner)
    defaults = DriftFields()
    service.configure(
        drift_tunables(defaults, {"reminders": (UTC, PoolDriftFields(on_drift="rest"))})
    )
    actions: list[tuple[str, str, OnDrift]] = []

    async def rest(number: str, pool: str, policy: OnDrift) -> None:
        actions.append((number, pool, policy))

    service.on_drift.append(rest)
    rng = random.Random(8)
    await feed(service, clock, rng, range(2), None)
    await feed(service, clock, rng, range(2, 4), FLAGGED)

    drift = [i for i in await alerts.incidents() if i.kind == "number_drift"]
    assert [(i.subject, i.resolved_at) for i in drift] == [(FLAGGED, None)]
    evidence = drift[0].payload
    assert evidence["pool"] == "reminders" and evidence["on_drift"] == "rest"
    assert evidence["answered"] < evidence["calls"] * 0.2 and 0.35 < evidence["peer_rate"] < 0.5
    assert 2 * DAY <= evidence["since"] < drift[0].first_seen
    assert actions == [(FLAGGED, "reminders", "rest")]

    clock.set(1.0)
    for _ in range(20):  # one lookup per tick at this rate limit; requests go first
        await scanner.tick()
        clock.advance(2)
    await scanner.stop()
    assert FLAGGED in [n for _t, n in fake.asked]

    await feed(service, clock, rng, range(4, 7), None)
    (resolved,) = [i for i in await alerts.incidents() if i.kind == "number_drift"]
    assert resolved.resolved_at is not None
    assert not [i for i in await alerts.incidents() if i.kind == "pool_drift"]
