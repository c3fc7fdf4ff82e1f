"""Compliance end to end: a real agent (FastAGI socket, SQLite file), the compliance route in
front of the outbound route as app.py wires it, an injected clock."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from agent import contract
from agent.agi.routing import AgiRequest
from agent.app import Agent
from agent.cli import compliance as compliance_cli
from agent.clock import FrozenClock
from agent.compliance.config import parse_compliance
from agent.compliance.route import ComplianceRoute
from agent.compliance.service import ComplianceService
from agent.config import ConfigFile
from agent.datadir import load_hash_key
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.outbound.route import OutboundRoute
from agent.settings import Settings
from agent.store import open_database
from tests.conftest import AgentFactory, agi_port, write_config
from tests.fake_asterisk import run_session

REUNION = ZoneInfo("Indian/Reunion")
PARIS = ZoneInfo("Europe/Paris")
PATIENT = "0692123456"  # a Réunion mobile, dialled as from France

POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.clinic]
purposes = ["survey", "results", "reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique" },
  { number = "+33142000002", name = "Clinique" },
]
"""

COMPLIANCE = """
[windows]
default = "Mon-Fri 09:00-19:00"
holidays = "FR"
results = "Mon-Sun 08:00-20:00"

[limits]
survey = { attempts = 3, days = 7 }
"""


Compliant = tuple[Agent, ComplianceService]


def build_compliance(agent: Agent, clock: FrozenClock) -> ComplianceService:
    assert agent.db is not None
    loaded = parse_compliance(COMPLIANCE)
    return ComplianceService(
        agent.db,
        clock,
        load_hash_key(agent.settings.hash_key_path),
        loaded.compliance,
        region=loaded.region,
        timezone=loaded.timezone,
    )


def install_compliance(agent: Agent, clock: FrozenClock) -> tuple[ComplianceService, bool]:
    """The agent's compliance service and route; built here, as app.py builds them, if app.py
    does not yet (then the second value is True: the caller starts and stops it)."""
    wired = getattr(agent, "compliance", None)
    route = agent.routes[contract.ROUTE_OUTBOUND]
    if isinstance(wired, ComplianceService) and isinstance(route, ComplianceRoute):
        assert agent.clock is clock
        return wired, False
    assert agent.outbound is not None and isinstance(route, OutboundRoute)
    service = build_compliance(agent, clock)
    agent.routes[contract.ROUTE_OUTBOUND] = ComplianceRoute(route, service, agent.outbound)
    return service, True


@pytest.fixture
async def compliant(
    make_agent: AgentFactory, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[tuple[Agent, ComplianceService]]:
    # Until agent/config.py reads these sections, the agent's file goes without them.
    integrated = "windows" in ConfigFile.model_fields or "compliance" in ConfigFile.model_fields
    agent = await make_agent(POOLS + COMPLIANCE if integrated else POOLS)
    service, ours = install_compliance(agent, clock)
    if ours:
        await service.start(refresh_seconds=0.05, chain_seconds=3600)
    # For the CLI commands, which read the sections themselves.
    write_config(tmp_path / "cli-pools.toml", POOLS + COMPLIANCE)
    yield agent, service
    if ours:
        await service.stop()


async def call(agent: Agent, purpose: str, callee: str = PATIENT) -> dict[str, str]:
    session = await run_session("127.0.0.1", agi_port(agent), args=[purpose, callee, "CASE-7"])
    return session.variables


async def test_the_window_is_read_in_reunion_time(compliant: Compliant, clock: FrozenClock) -> None:
    agent, _ = compliant
    clock.set(datetime(2026, 11, 17, 8, 30, tzinfo=REUNION))  # Tuesday, 05:30 in Paris
    early = await call(agent, "survey")
    assert early["TRUSTLINE_STATUS"] == "outside_window"
    assert early["TRUSTLINE_NEXT_WINDOW"] == "2026-11-17T09:00:00+04:00"
    assert "CALLERID(num)" not in early  # no caller ID: the subroutine must not dial
    clock.set(datetime(2026, 11, 17, 9, 30, tzinfo=REUNION))
    later = await call(agent, "survey")
    assert later["TRUSTLINE_STATUS"] == "ok"
    assert "TRUSTLINE_NEXT_WINDOW" not in later


async def test_14_july_is_refused_for_a_purpose_with_french_holidays(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, _ = compliant
    clock.set(datetime(2026, 7, 14, 11, 0, tzinfo=PARIS))
    refused = await call(agent, "survey", "0612345678")
    assert (refused["TRUSTLINE_STATUS"], refused["TRUSTLINE_REASON"]) == (
        "outside_window",
        "holiday",
    )
    assert refused["TRUSTLINE_NEXT_WINDOW"] == "2026-07-15T09:00:00+02:00"
    # results has its own window and names no calendar.
    assert (await call(agent, "results", "0612345678"))["TRUSTLINE_STATUS"] == "ok"


async def test_the_answer_changes_at_the_window_edges_at_midnight_and_per_zone(
    compliant: Compliant, clock: FrozenClock
) -> None:
    # The service keeps each window's answer until it may change: every edge must still show.
    _, service = compliant
    paris, reunion = "0612345678", PATIENT

    async def status(when: datetime, callee: str = paris) -> tuple[str, str, str | None]:
        clock.set(when)
        v = await service.check("survey", callee)
        return v.status, v.reason, v.next_window

    monday = datetime(2026, 7, 13, 18, 59, 59, tzinfo=PARIS)  # the eve of 14 July
    assert (await status(monday))[0] == "allowed"
    # 20:59:59 in La Réunion: the same instant, another zone, outside its window (and the
    # default window's calendar is France's: 14 July is off there too).
    in_reunion = await status(monday, reunion)
    assert in_reunion == ("outside_window", "window", "2026-07-15T09:00:00+04:00")
    closed = ("outside_window", "window", "2026-07-15T09:00:00+02:00")
    assert await status(monday + timedelta(seconds=1)) == closed  # 19:00: 14 July is a holiday
    assert await status(monday + timedelta(hours=4)) == closed
    holiday = await status(datetime(2026, 7, 14, 0, 0, 1, tzinfo=PARIS))
    assert holiday == ("outside_window", "holiday", "2026-07-15T09:00:00+02:00")
    assert (await status(datetime(2026, 7, 15, 9, 0, tzinfo=PARIS)))[0] == "allowed"
    # A clock set back (an admin fixing the time) is answered for the time it shows.
    assert (await status(monday - timedelta(hours=1)))[0] == "allowed"
    assert (await status(datetime(2026, 7, 14, 10, 0, tzinfo=PARIS)))[1] == "holiday"


async def test_the_fourth_survey_attempt_in_seven_days_is_refused(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, _ = compliant
    start = datetime(2026, 11, 16, 10, 0, tzinfo=REUNION)  # Monday
    for day in range(3):
        clock.set(start + timedelta(days=day))
        assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "ok"
    clock.set(start + timedelta(days=3))
    fourth = await call(agent, "survey")
    assert (fourth["TRUSTLINE_STATUS"], fourth["TRUSTLINE_REASON"]) == (
        "attempts_exceeded",
        "attempt_limit",
    )
    # Another purpose is not limited, and a refused call is no attempt.
    assert (await call(agent, "results"))["TRUSTLINE_STATUS"] == "ok"
    # Seven days after the first attempt, it has left the period.
    clock.set(start + timedelta(days=7, minutes=1))
    assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "ok"


async def test_the_limit_holds_before_the_audit_rows_reach_the_store(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, _ = compliant
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    statuses = [(await call(agent, "survey"))["TRUSTLINE_STATUS"] for _ in range(4)]
    assert statuses == ["ok", "ok", "ok", "attempts_exceeded"]


async def test_the_limit_counts_each_call_once_with_a_clock_that_moves(
    compliant: Compliant, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As time.time() does: the audit row's time (the decision's start) comes before the
    moment the call is noted as let out. Each call is counted once, before and after its row
    is read back."""
    agent, service = compliant
    assert agent.outbound is not None
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))

    def ticking() -> float:
        clock.advance(0.001)
        return clock._t

    monkeypatch.setattr(clock, "now", ticking)
    statuses = []
    for _ in range(4):
        statuses.append((await call(agent, "survey"))["TRUSTLINE_STATUS"])
        await agent.outbound.flush()  # the audit row reaches the store
        await service.refresh()  # and is read back
    assert statuses == ["ok", "ok", "ok", "attempts_exceeded"]


@pytest.mark.parametrize("read_back", [False, True])
async def test_two_calls_at_once_cannot_both_take_the_last_attempt(
    compliant: Compliant, clock: FrozenClock, read_back: bool
) -> None:
    """A campaign with the patient twice in it: the third and fourth survey calls come at the
    same moment. One goes out, the other is refused, whether the first two are only known to
    this agent or already read back from the store (then the store counts)."""
    agent, service = compliant
    assert agent.outbound is not None
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    for _ in range(2):
        assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "ok"
    if read_back:
        await agent.outbound.flush()
        await service.refresh()
    both = await asyncio.gather(call(agent, "survey"), call(agent, "survey"))
    assert sorted(c["TRUSTLINE_STATUS"] for c in both) == ["attempts_exceeded", "ok"]
    assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "attempts_exceeded"


async def test_an_ivr_opt_out_over_ami_stops_surveys_but_not_results(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, service = compliant
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    event = {
        "Event": "UserEvent",
        "UserEvent": "OptOut",
        "Number": PATIENT,
        "Purpose": "survey",
        "Uniqueid": "1795344829.17",
    }
    assert await service.on_user_event(event)
    # A second agent on the same PBX gets the same event: it is stored once.
    assert not await service.on_user_event(event)
    refused = await call(agent, "survey", "+262692123456")  # the same patient, written in E.164
    assert (refused["TRUSTLINE_STATUS"], refused["TRUSTLINE_REASON"]) == ("opted_out", "opted_out")
    assert (await call(agent, "results"))["TRUSTLINE_STATUS"] == "ok"
    assert agent.db is not None
    rows = await agent.db.fetchall("SELECT action, source, event_id FROM optout_events")
    assert [tuple(r) for r in rows] == [("add", "ivr", "1795344829.17")]
    stored = "\n".join(str(tuple(r)) for r in await agent.db.fetchall("SELECT * FROM optouts"))
    assert "692123456" not in stored  # a keyed hash, never the number


async def test_a_bad_opt_out_event_is_dropped_and_loses_nothing(compliant: Compliant) -> None:
    _, service = compliant
    assert not await service.on_user_event({"UserEvent": "OptOut", "Number": "abc", "Purpose": "x"})
    assert not await service.on_user_event(
        {"UserEvent": "OptOut", "Number": PATIENT, "Purpose": "no spaces!"}
    )
    assert not await service.on_user_event({"UserEvent": "SpamReport", "Number": PATIENT})


def cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    compliance_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    settings = Settings(config=tmp_path / "cli-pools.toml", data_dir=tmp_path / "data")
    code: int = asyncio.run(args.handler(args, settings))
    return code


async def test_the_running_agent_honours_a_cli_opt_out_within_seconds(
    compliant: Compliant, clock: FrozenClock, tmp_path: Path
) -> None:
    agent, _ = compliant  # reminder: a purpose with no attempt limit
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    assert (await call(agent, "reminder"))["TRUSTLINE_STATUS"] == "ok"
    # The CLI is another process with its own connection to the store.
    code = await asyncio.to_thread(
        cli, tmp_path, "optout", "add", "+262 692 12 34 56", "--purpose", "reminder"
    )
    assert code == 0
    for _ in range(200):  # the agent polls the store's opt-out version
        status = (await call(agent, "reminder"))["TRUSTLINE_STATUS"]
        if status == "opted_out":
            break
        await asyncio.sleep(0.02)
    assert status == "opted_out"
    assert (
        await asyncio.to_thread(cli, tmp_path, "optout", "remove", PATIENT, "--purpose", "reminder")
        == 0
    )
    for _ in range(200):
        status = (await call(agent, "reminder"))["TRUSTLINE_STATUS"]
        if status != "opted_out":
            break
        await asyncio.sleep(0.02)
    assert status == "ok"
    db = sqlite3.connect(tmp_path / "data" / "trustline.sqlite3")
    actions = [r[0] for r in db.execute("SELECT action FROM admin_audit ORDER BY id")]
    assert actions == ["optout_add", "optout_remove"]


async def test_refused_calls_are_audited_like_any_call(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, _ = compliant
    clock.set(datetime(2026, 11, 17, 7, 0, tzinfo=REUNION))
    await call(agent, "survey")
    assert agent.outbound is not None and agent.db is not None
    await agent.outbound.flush()
    row = await agent.db.fetchone("SELECT purpose, pool, status, reason, case_ref FROM call_audit")
    assert row is not None
    assert tuple(row) == ("survey", "clinic", "outside_window", "window", "CASE-7")


async def test_explain_call_names_the_rule_that_stops_it(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, service = compliant
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    for _ in range(3):
        await call(agent, "survey")
    rows = {rule: (result, why) for rule, result, why in await service.explain("survey", PATIENT)}
    assert rows["time zone"] == ("info", "Indian/Reunion")
    assert rows["opt-out"][0] == "passes"
    assert rows["attempt limit"] == ("stops", "3 of 3 in the last 7 days")
    assert rows["window"][0] == "passes"
    clock.set(datetime(2026, 11, 17, 20, 0, tzinfo=REUNION))
    rows = {rule: (result, why) for rule, result, why in await service.explain("results", PATIENT)}
    assert rows["attempt limit"][0] == "not set"
    assert rows["window"] == (
        "stops",
        "Mon-Sun 08:00-20:00; outside Mon-Sun 08:00-20:00; next 2026-11-18T08:00:00+04:00",
    )


async def test_the_explain_call_command_prints_the_rules_without_the_number(
    compliant: Compliant, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent, _ = compliant
    assert agent.outbound is not None and agent.db is not None
    hashed = agent.outbound.callee_hash(PATIENT)
    now = time.time()  # the command reads the system clock
    await OutboundRepo(agent.db).write_audit(
        [
            AuditRecord(now - 3600 * h, f"e{h}", "survey", "clinic", "+33142000001", "ok",
                        "least_used", hashed, None)
            for h in (1, 2, 200)  # the third is older than the 7 days
        ],
        {},
    )  # fmt: skip
    code = await asyncio.to_thread(
        cli, tmp_path, "explain-call", "--purpose", "survey", "--callee", PATIENT
    )
    assert code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["RULE", "RESULT", "WHY"]
    assert "Indian/Reunion" in out
    assert "2 of 3 in the last 7 days" in out  # counted by the store
    assert "692123456" not in out


async def test_attempts_already_in_the_store_and_by_another_agent_count(
    compliant: Compliant, clock: FrozenClock, tmp_path: Path
) -> None:
    agent, service = compliant
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    assert agent.outbound is not None
    hashed = agent.outbound.callee_hash(PATIENT)  # as the outbound service stores it
    # Two survey calls made by another agent on the same store (its own connection).
    other = await open_database(tmp_path / "data" / "trustline.sqlite3")
    try:
        now = clock.now()
        await OutboundRepo(other).write_audit(
            [
                AuditRecord(
                    now - 3600 * h,
                    f"x{h}",
                    "survey",
                    "clinic",
                    "+33142000001",
                    "ok",
                    "least_used",
                    hashed,
                    None,
                )
                for h in (1, 2)
            ],
            {},
        )
    finally:
        await other.close()
    for _ in range(200):  # picked up at the next refresh of the attempt index
        limit = dict((rule, why) for rule, _, why in await service.explain("survey", PATIENT))
        if limit["attempt limit"].startswith("2 of 3"):
            break
        await asyncio.sleep(0.02)
    assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "ok"  # the third
    assert (await call(agent, "survey"))["TRUSTLINE_STATUS"] == "attempts_exceeded"
    # A service started later reads them all from the store.
    await agent.outbound.flush()
    fresh = build_compliance(agent, clock)
    await fresh.start(refresh_seconds=None)
    verdict = await fresh.check("survey", "+262692123456")
    assert verdict.status == "attempts_exceeded"


async def test_on_a_deadline_the_window_and_opt_outs_still_hold(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, service = compliant
    route = agent.routes[contract.ROUTE_OUTBOUND]
    assert isinstance(route, ComplianceRoute)

    def request(purpose: str) -> AgiRequest:
        return AgiRequest("outbound", {}, (purpose, PATIENT, "CASE-7"), {"agi_uniqueid": "1.2"}, "")

    clock.set(datetime(2026, 11, 17, 7, 0, tzinfo=REUNION))
    early = dict(route.on_failure(request("survey"), "deadline").variables)
    assert early["TRUSTLINE_STATUS"] == "outside_window"
    assert early["TRUSTLINE_NEXT_WINDOW"] == "2026-11-17T09:00:00+04:00"
    clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
    await service.add_optout(PATIENT, "survey", "ivr")
    assert (
        dict(route.on_failure(request("survey"), "deadline").variables)["TRUSTLINE_STATUS"]
        == "opted_out"
    )
    fallback = dict(route.on_failure(request("results"), "deadline").variables)
    assert (fallback["TRUSTLINE_STATUS"], fallback["CALLERID(num)"]) == ("fallback", "+33142000001")


async def test_no_full_number_in_logs_or_metrics(
    compliant: Compliant, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    agent, service = compliant
    with caplog.at_level(logging.DEBUG, logger="agent"):
        clock.set(datetime(2026, 11, 17, 7, 0, tzinfo=REUNION))
        await call(agent, "survey")  # outside_window
        clock.set(datetime(2026, 11, 17, 10, 0, tzinfo=REUNION))
        await call(agent, "survey")  # ok
        await service.on_user_event({"UserEvent": "OptOut", "Number": PATIENT, "Purpose": "survey"})
        await service.on_user_event({"UserEvent": "OptOut", "Number": PATIENT, "Purpose": "a b"})
        await call(agent, "survey")  # opted_out
    assert agent.http_address is not None
    async with aiohttp.ClientSession() as http:
        host, port = agent.http_address
        async with http.get(f"http://{host}:{port}/metrics") as response:
            metrics = await response.text()
    assert "opted_out" in metrics  # the refusal is counted, by status and reason only
    for text in (caplog.text, metrics):
        assert "692123456" not in text and "692 12 34 56" not in text


async def test_a_refusal_in_the_one_variable_answer_the_dialplan_asks_for(
    compliant: Compliant, clock: FrozenClock
) -> None:
    agent, service = compliant
    clock.set(datetime(2026, 11, 17, 8, 30, tzinfo=REUNION))

    async def packed(purpose: str) -> dict[str, str]:
        session = await run_session(
            "127.0.0.1", agi_port(agent), script="outbound?answer=one", args=[purpose, PATIENT]
        )
        return session.variables

    assert await packed("survey") == {
        "TRUSTLINE_ANSWER": "outside_window|clinic|window||",
        "TRUSTLINE_NEXT_WINDOW": "2026-11-17T09:00:00+04:00",
    }
    await service.add_optout(PATIENT, "results", "ivr")
    assert await packed("results") == {"TRUSTLINE_ANSWER": "opted_out|clinic|opted_out||"}
