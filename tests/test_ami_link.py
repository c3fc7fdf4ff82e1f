"""The supervised AMI link against the replay server: outcomes, reports, AstDB, reconnects.

Real pieces only: a real SQLite store, the real OutboundService deciding caller IDs (which
writes the call_audit rows), the replay server speaking the captured bytes over TCP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from agent.ami.link import FALLBACK_FAMILY, FALLBACK_INDEX_KEY, AmiLink, backoff_delay
from agent.clock import FrozenClock
from agent.config import parse_config
from agent.services.outbound import OutboundService
from agent.settings import Settings
from agent.store.db import Database, open_database
from tests.ami_replay import ReplayAmiServer, events, with_header
from tests.conftest import POOLS

T = TypeVar("T")

# The channel that ran the outbound AGI in each capture (agi_uniqueid) and its Linkedid.
SCENARIOS = {
    "ami-answered": ("1795344922.29", "1795344922.28"),
    "ami-busy": ("1795344846.5", "1795344846.4"),
    "ami-noanswer": ("1795344855.9", "1795344855.8"),
    "ami-congestion": ("1795344869.13", "1795344869.12"),
}


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 5.0) -> T:
    """Bounded wait for ``probe`` to return something truthy."""
    async with asyncio.timeout(within):
        while True:
            value = await probe()
            if value:
                return value
            await asyncio.sleep(0.02)


@dataclass
class Rig:
    server: ReplayAmiServer
    db: Database
    outbound: OutboundService
    clock: FrozenClock
    registry: CollectorRegistry
    tmp: Path
    recordings: list[tuple[str, str]] = field(default_factory=list)
    links: list[AmiLink] = field(default_factory=list)

    def link(self, **overrides: Any) -> AmiLink:
        values: dict[str, Any] = {
            "data_dir": self.tmp / "data",
            "ami_port": self.server.port,
            "ami_user": "trustline",
            "ami_secret": "capture-secret",
        }
        values.update(overrides.pop("settings", {}))
        knobs: dict[str, Any] = {
            "ping_interval": 0.2,
            "pong_within": 0.3,
            "action_timeout": 1.0,
            "backoff_initial": 0.05,
            "backoff_max": 0.2,
        }
        knobs.update(overrides)

        async def on_recording(uniqueid: str, filename: str) -> None:
            self.recordings.append((uniqueid, filename))

        link = AmiLink(
            Settings(**values),
            self.db,
            self.clock,
            self.outbound,
            on_recording,
            self.registry,
            **knobs,
        )
        self.links.append(link)
        return link

    async def up(self, link: AmiLink, logins: int = 1) -> None:
        """Start (or wait for a reconnect) until logged in and re-synced ``logins`` times."""
        await link.start()
        await eventually(lambda: _true(link.resyncs >= logins and link.status()[0]), within=10)

    async def place(self, uniqueid: str, purpose: str = "reminder") -> str:
        """The FastAGI decision for a call: returns the caller ID handed out."""
        decision = await self.outbound.decide(purpose, "0612345678", uniqueid=uniqueid)
        await self.outbound.flush()
        assert decision.number is not None
        return decision.number

    async def row(self, uniqueid: str) -> dict[str, Any] | None:
        found = await self.db.fetchone(
            "SELECT * FROM call_audit WHERE uniqueid = ? AND ended_at IS NOT NULL"
            " AND cdr_disposition IS NOT NULL",
            (uniqueid,),
        )
        return dict(found) if found is not None else None

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def _true(value: bool) -> bool:
    return value


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    clock = FrozenClock(datetime(2026, 11, 22, 11, 55, tzinfo=ZoneInfo("Europe/Paris")))
    db = await open_database(tmp_path / "trustline.sqlite3")
    outbound = OutboundService(db, clock, parse_config(POOLS), hash_key=b"k" * 32)
    await outbound.start(watch_interval=None)
    async with ReplayAmiServer(fail_delay=0.05) as server:
        r = Rig(server, db, outbound, clock, CollectorRegistry(), tmp_path)
        yield r
        for link in r.links:
            await link.stop()
    await outbound.stop()
    await db.close()


@pytest.mark.parametrize(
    ("capture", "outcome", "dial_status", "disposition", "talk"),
    [
        ("ami-answered", "answered", "ANSWER", "ANSWERED", 20),
        ("ami-busy", "busy", "BUSY", "BUSY", 0),
        ("ami-noanswer", "no_answer", "NOANSWER", "NO ANSWER", 0),
        ("ami-congestion", "congestion", "CONGESTION", "FAILED", 0),
    ],
)
async def test_captured_call_stores_its_outcome(
    rig: Rig, capture: str, outcome: str, dial_status: str, disposition: str, talk: int
) -> None:
    uniqueid, linkedid = SCENARIOS[capture]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}  # the call is up while the AGI answers
    link = rig.link()
    await rig.up(link)
    await rig.server.play(events(capture))
    row = await eventually(lambda: rig.row(uniqueid))
    assert row["outcome"] == outcome
    assert row["dial_status"] == dial_status
    assert row["cdr_disposition"] == disposition
    assert row["talk_seconds"] == talk
    assert row["hangup_cause"] == 16
    assert row["linkedid"] == linkedid
    assert row["ended_at"] == rig.clock.now()
    # MixMonitor raised no stop event: the channel's Hangup completes the recording.
    assert rig.recordings == [(uniqueid, f"/var/spool/asterisk/monitor/{uniqueid}.wav")]
    assert rig.metric("trustline_call_outcomes_total", pool="reminders", outcome=outcome) == 1


async def test_calls_we_did_not_place_leave_no_trace(rig: Rig) -> None:
    link = rig.link()
    await rig.up(link)
    # The busy capture ends with the tail of an older answered call; inbound and agent-down
    # calls never got a caller ID from us.
    for capture in ("ami-inbound", "ami-agent-down", "ami-hangup-during-agi", "ami-busy"):
        await rig.server.play(events(capture))
    await rig.server.wait_for(lambda: True)
    await link.flush()
    await eventually(lambda: _true(len(rig.recordings) == 1))  # the busy call recorded
    rows = await rig.db.fetchall("SELECT uniqueid FROM call_audit WHERE outcome IS NOT NULL")
    assert rows == []


async def test_hangup_during_the_agi_is_not_dialled(rig: Rig) -> None:
    uniqueid = "1795344907.27"
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: "1795344907.26"}
    link = rig.link()
    await rig.up(link)
    await rig.server.play(events("ami-hangup-during-agi"))
    row = await eventually(lambda: rig.row(uniqueid))
    # No DialEnd on our channel: the callee was never rung, whatever the channel's CDR says.
    assert row["outcome"] == "not_dialled"
    assert row["dial_status"] is None


async def test_spam_report_from_the_ivr_quarantines_at_the_threshold(rig: Rig) -> None:
    link = rig.link()
    await rig.up(link)
    captured = events("ami-userevent")
    # As captured: a number that is not ours (recorded or ignored, never quarantined).
    await rig.server.play(captured)
    report = next(e for e in captured if b"UserEvent: SpamReport" in e)
    ours = with_header(report, "Number", "01 42 00 00 02")  # national format, one of ours
    await rig.server.play([ours, ours])  # the pool's threshold is 2 a day
    state = await eventually(lambda: _quarantined(rig.outbound, "+33142000002"))
    assert state == "quarantined"
    ours_rows = await rig.db.fetchall("SELECT source FROM spam_reports WHERE ours = 1")
    assert [r[0] for r in ours_rows] == ["ivr", "ivr"]
    assert rig.metric("trustline_spam_reports_ami_total", source="ivr") == 3


async def _quarantined(outbound: OutboundService, number: str) -> str | None:
    for row in outbound.number_rows():
        if row["number"] == number and row["state"] == "quarantined":
            return "quarantined"
    return None


async def test_astdb_fallbacks_written_and_stale_keys_removed(rig: Rig) -> None:
    astdb = rig.server.astdb
    astdb[("trustline", FALLBACK_INDEX_KEY)] = "reminder,retired"
    astdb[(FALLBACK_FAMILY, "retired")] = "+33199999999"
    link = rig.link()
    await rig.up(link)
    assert {k: v for k, v in astdb.items() if k[0] == FALLBACK_FAMILY} == {
        (FALLBACK_FAMILY, "reminder"): "+33142000001",
        (FALLBACK_FAMILY, "confirmation"): "+33142000001",
    }
    assert astdb[("trustline", FALLBACK_INDEX_KEY)] == "confirmation,reminder"
    assert [a["Key"] for a in rig.server.actions_named("DBDel")] == ["retired"]

    # A reload moves the purposes: config_changed re-syncs at once.
    await rig.outbound.apply_config(
        parse_config(POOLS.replace('"reminder", "confirmation"', '"recall"'))
    )
    await link.config_changed()
    assert {k[1]: v for k, v in astdb.items() if k[0] == FALLBACK_FAMILY} == {
        "recall": "+33142000001"
    }


async def test_refused_login_reports_clearly_and_backs_off(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.ami")
    link = rig.link(settings={"ami_secret": "not-the-secret"})
    await link.start()
    await eventually(lambda: _true(rig.metric("trustline_ami_failures_total", kind="auth") >= 3))
    healthy, detail = link.status()
    assert not healthy
    assert "login refused for user 'trustline': Authentication failed" in detail
    assert "retry in" in detail
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("Authentication failed" in m for m in errors)
    assert not any("not-the-secret" in r.getMessage() for r in caplog.records)


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    lows = [backoff_delay(n, 1.0, 60.0, 0.0) for n in range(8)]
    highs = [backoff_delay(n, 1.0, 60.0, 0.999999) for n in range(8)]
    assert lows == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert all(lo < hi <= 60.0 for lo, hi in zip(lows, highs, strict=True))
    assert backoff_delay(10_000, 1.0, 60.0, 0.5) == 45.0


async def test_dropped_link_reconnects_and_resyncs(rig: Rig) -> None:
    uniqueid, linkedid = SCENARIOS["ami-answered"]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    await rig.up(link)
    puts_before = len(rig.server.actions_named("DBPut"))
    # Asterisk drops us; the call ends while we are away.
    rig.server.live_channels = {}
    await rig.server.drop()
    await rig.up(link, logins=2)
    assert rig.server.logins == 2
    assert len(rig.server.actions_named("DBPut")) == 2 * puts_before
    row = await eventually(
        lambda: rig.db.fetchone(
            "SELECT outcome FROM call_audit WHERE uniqueid = ? AND outcome IS NOT NULL", (uniqueid,)
        )
    )
    assert row[0] == "unknown"


async def test_call_placed_while_ami_was_down_is_adopted_on_connect(rig: Rig) -> None:
    uniqueid, linkedid = SCENARIOS["ami-noanswer"]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    await rig.up(link)
    # Only the events after the AGI: no VarSet TRUSTLINE_POOL is seen, the store said it is ours.
    stream = events("ami-noanswer")
    after_agi = stream[next(i for i, e in enumerate(stream) if b"Value: SUCCESS" in e) :]
    await rig.server.play(after_agi)
    row = await eventually(lambda: rig.row(uniqueid))
    assert row["outcome"] == "no_answer"


async def test_silent_link_is_detected_and_replaced(rig: Rig) -> None:
    link = rig.link()
    await rig.up(link)
    rig.server.silent = True
    await eventually(lambda: _true(rig.metric("trustline_ami_failures_total", kind="dead") >= 1))
    assert not link.status()[0]
    assert "no Pong" in link.status()[1]
    rig.server.silent = False
    await eventually(lambda: _true(rig.server.logins >= 2 and link.status()[0]), within=10)


async def test_without_a_user_the_agent_runs_without_ami(rig: Rig) -> None:
    link = rig.link(settings={"ami_user": None})
    await link.start()
    assert link.status() == (True, "AMI disabled: TRUSTLINE_AMI_USER is not set")
    assert rig.server.connections == 0


async def test_secret_file_is_read_and_never_shown(rig: Rig) -> None:
    secret_file = rig.tmp / "ami.secret"
    secret_file.write_text("capture-secret\n", encoding="utf-8")
    link = rig.link(settings={"ami_secret": None, "ami_secret_file": secret_file})
    await rig.up(link)
    assert "capture-secret" not in link.status()[1]


async def test_outcome_that_beats_its_audit_row_is_not_lost(rig: Rig) -> None:
    uniqueid, _ = SCENARIOS["ami-busy"]
    link = rig.link(late_row_delay=0.2)
    await rig.up(link)
    # The busy call ended 7 ms after the AGI answered: before the write-behind audit row.
    await rig.server.play(events("ami-busy"))
    await rig.place(uniqueid)
    row = await eventually(lambda: rig.row(uniqueid))
    assert row["outcome"] == "busy"
