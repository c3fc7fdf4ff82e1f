"""Reputation providers and the scanner, against a local aiohttp server playing the provider."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent.alerts.service import AlertService
from agent.clock import FrozenClock
from agent.errors import BadRequest
from agent.outcomes.config import OnFlag, ProviderConfig
from agent.reputation.providers import HttpJsonProvider, parse_vendor_csv
from agent.reputation.repo import ReputationRepo
from agent.reputation.scanner import ReputationScanner
from agent.store.db import Database, open_database

NUMBERS = {f"+3314200000{i}": "reminders" for i in range(1, 6)}
FLAGGED = "+33142000003"
START = 1_800_000_000.0


@dataclass
class Provider:
    clock: FrozenClock
    flag_at: float = float("inf")
    stop_at: float = float("inf")
    troubles: list[str] = field(default_factory=list)  # served first, once flagged
    asked: list[tuple[float, str]] = field(default_factory=list)
    auth: set[str] = field(default_factory=set)

    async def handle(self, request: web.Request) -> web.Response:
        number = request.match_info["number"]
        now = self.clock.now()
        self.asked.append((now, number))
        self.auth.add(request.headers.get("Authorization", ""))
        flagged = number == FLAGGED and self.flag_at <= now < self.stop_at
        if flagged and self.troubles:
            trouble = self.troubles.pop(0)
            if trouble == "429":
                return web.Response(status=429, headers={"Retry-After": "40"})
            if trouble == "500":
                return web.Response(status=500, text="oops")
            if trouble == "slow":
                await asyncio.sleep(2)
            if trouble in ("malformed", "slow"):
                return web.Response(text='{"data": {"score": ', content_type="application/json")
            if trouble == "wrong-type":
                return web.json_response({"data": {"score": "high", "label": ["x"]}})
        if flagged:
            return web.json_response({"data": {"score": 92, "label": "Spam Likely"}})
        return web.json_response({"data": {"score": 8, "label": "ok"}})


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
async def provider(clock: FrozenClock) -> AsyncIterator[tuple[Provider, str]]:
    fake = Provider(clock)
    app = web.Application()
    app.router.add_get("/v1/numbers/{number}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/numbers/{{number}}"
    await runner.cleanup()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "store.db")
    yield database
    await database.close()


def provider_config(tmp_path: Path, url: str) -> ProviderConfig:
    token = tmp_path / "token"
    token.write_text("Bearer t0ken\n")
    return ProviderConfig(
        name="acme",
        url=url,
        auth_file=token,
        score_path="data.score",
        label_path="data.label",
        flag_score_at_least=80,
        # Only the timeout departs from the defaults, so "slow" does not cost the test 5 s.
        timeout_seconds=0.3,
    )


async def scanner_for(
    db: Database, clock: FrozenClock, config: ProviderConfig, actions: list[tuple[str, str, str]]
) -> tuple[ReputationScanner, AlertService]:
    alerts = AlertService(db, clock)
    scanner = ReputationScanner(db, clock, alerts)
    scanner.configure(NUMBERS, {"reminders": "rest"}, HttpJsonProvider(config))

    async def act(number: str, pool: str, policy: OnFlag) -> None:
        actions.append((number, pool, policy))

    scanner.on_flag.append(act)
    await scanner.load()
    return scanner, alerts


async def run_for(scanner: ReputationScanner, clock: FrozenClock, seconds: float) -> None:
    end = clock.now() + seconds
    try:
        while clock.now() < end:
            await scanner.tick()  # never raises, whatever the provider does
            clock.advance(5)
    finally:
        await scanner.stop()  # closes the provider's HTTP session; tick works on


async def flag_seen_at(alerts: AlertService) -> float | None:
    found = [i for i in await alerts.incidents() if i.kind == "reputation_flag"]
    return found[0].first_seen if found else None


async def test_a_drift_lookup_through_a_flaky_provider_raises_the_alert_within_5_minutes(
    tmp_path: Path, db: Database, clock: FrozenClock, provider: tuple[Provider, str]
) -> None:
    fake, url = provider
    actions: list[tuple[str, str, str]] = []
    scanner, alerts = await scanner_for(db, clock, provider_config(tmp_path, url), actions)
    await run_for(scanner, clock, 600)
    fake.flag_at = clock.now()
    fake.troubles = ["429", "500", "slow", "malformed", "wrong-type"]
    scanner.request(FLAGGED, "answer rate past half the drift threshold")
    await run_for(scanner, clock, 600)
    seen = await flag_seen_at(alerts)
    assert seen is not None and seen - fake.flag_at <= 300
    assert fake.troubles == []  # it went through every kind of trouble first
    incident = (await alerts.incidents(open_only=True))[0]
    assert (incident.subject, incident.payload["label"], incident.payload["score"]) == (
        FLAGGED,
        "Spam Likely",
        92,
    )
    assert actions == [(FLAGGED, "reminders", "rest")]
    assert fake.auth == {"Bearer t0ken"}
    # The 429 held every lookup for its Retry-After (40 s), not just that number's.
    after_429 = [t for t, _n in fake.asked if fake.flag_at < t < fake.flag_at + 40]
    assert after_429 == []


async def test_scheduled_scans_cover_every_number_hourly_within_the_rate_limit_and_catch_a_flag(
    tmp_path: Path, db: Database, clock: FrozenClock, provider: tuple[Provider, str]
) -> None:
    fake, url = provider
    actions: list[tuple[str, str, str]] = []
    scanner, alerts = await scanner_for(db, clock, provider_config(tmp_path, url), actions)
    fake.flag_at = START + 2 * 3600 + 1234
    fake.troubles = ["500", "malformed"]
    await run_for(scanner, clock, 4 * 3600)
    per_number = {n: [t for t, m in fake.asked if m == n] for n in NUMBERS}
    for number, times in per_number.items():
        if number != FLAGGED:
            assert len(times) == 4, number  # hourly
            assert all(3600 <= b - a <= 3610 for a, b in itertools.pairwise(times))
    stamps = sorted(t for t, _n in fake.asked)
    assert min(b - a for a, b in itertools.pairwise(stamps)) >= 2.0  # 30 a minute
    seen = await flag_seen_at(alerts)
    # A flag set between two scans is seen at the next one (hourly), troubles included.
    assert seen is not None and 0 <= seen - fake.flag_at <= 3600 + 300
    history = await ReputationRepo(db).history(FLAGGED)
    assert [c.flagged for c in history][:2] == [False, False] and history[-1].flagged
    assert actions == [(FLAGGED, "reminders", "rest")]


async def test_a_flag_the_provider_lifts_resolves_the_alert(
    tmp_path: Path, db: Database, clock: FrozenClock, provider: tuple[Provider, str]
) -> None:
    fake, url = provider
    scanner, alerts = await scanner_for(db, clock, provider_config(tmp_path, url), [])
    fake.flag_at, fake.stop_at = START, START + 1800
    await run_for(scanner, clock, 2 * 3600)
    (incident,) = await alerts.incidents()
    assert incident.kind == "reputation_flag" and incident.resolved_at is not None
    assert incident.resolved_at >= fake.stop_at


async def test_a_vendor_list_is_imported_and_raises_its_flags(
    db: Database, clock: FrozenClock
) -> None:
    alerts = AlertService(db, clock)
    scanner = ReputationScanner(db, clock, alerts)
    scanner.configure(NUMBERS, {"reminders": "alert"}, None)
    text = "Number,Label,Score\n01 42 00 00 03,spam likely,\n+33142000004,clean,3\n+33699999999,,\n"
    verdicts = parse_vendor_csv(text, "FR")
    assert await scanner.record(verdicts, "csv:vendor.csv") == (2, 1)
    open_alerts = await alerts.incidents(open_only=True)
    assert [(i.kind, i.subject) for i in open_alerts] == [("reputation_flag", FLAGGED)]
    latest = await ReputationRepo(db).latest()
    assert set(latest) == {FLAGGED, "+33142000004"}  # not ours: not kept


def test_a_vendor_list_with_bad_lines_is_refused_whole_naming_each_line() -> None:
    text = "number,score\n+33142000003,12\nnot-a-number,1\n+33142000004,high\n"
    with pytest.raises(BadRequest) as err:
        parse_vendor_csv(text, "FR")
    message = str(err.value)
    assert "line 3:" in message and "line 4: score 'high' is not a number" in message
    with pytest.raises(BadRequest, match="'number' column"):
        parse_vendor_csv("phone,score\n+33142000003,1\n", "FR")


def test_provider_config_refuses_a_url_without_the_number() -> None:
    with pytest.raises(ValueError, match=r"\{number\}"):
        ProviderConfig(url="https://rep.example/v1/lookup")
