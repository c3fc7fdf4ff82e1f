"""The supervised AMI link against the replay server: outcomes, reports, AstDB, reconnects.

Real pieces only: a real SQLite store, the real OutboundService deciding caller IDs (which
writes the call_audit rows), the link wired as the agent wires it (the outcomes intake acting
on its facts, the outbound AstDB sync), the replay server speaking the captured bytes over TCP.
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

from agent.ami.link import AmiLink, backoff_delay
from agent.clock import FrozenClock
from agent.config import parse_config
from agent.contract import ASTDB_FALLBACK_FAMILY as FALLBACK_FAMILY
from agent.contract import ASTDB_FALLBACK_INDEX_KEY as FALLBACK_INDEX_KEY
from agent.outbound.astdb import FallbackSync
from agent.outbound.service import OutboundService
from agent.outcomes.intake import OutcomeIntake
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
    intakes: list[OutcomeIntake] = field(default_factory=list)

    def link(self, registry: CollectorRegistry | None = None, **overrides: Any) -> AmiLink:
        """An AmiLink to the replay server; a second link on the same PBX needs its own
        ``registry`` (metric names are per registry)."""
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
        intake_knobs = {k: overrides.pop(k) for k in ("late_row_delay",) if k in overrides}
        knobs.update(overrides)

        async def on_recording(uniqueid: str, filename: str) -> None:
            self.recordings.append((uniqueid, filename))

        registry = self.registry if registry is None else registry
        intake = OutcomeIntake(self.db, self.outbound, on_recording, registry, **intake_knobs)
        self.intakes.append(intake)
        link = AmiLink(
            Settings(**values),
            self.clock,
            intake,
            FallbackSync(self.outbound.fallbacks),
            registry,
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


async def test_each_stored_outcome_reaches_the_listeners_even_past_a_failing_one(
    rig: Rig,
) -> None:
    uniqueid, linkedid = SCENARIOS["ami-answered"]
    number = await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    heard: list[tuple[float, str | None, str | None, str, int]] = []

    async def broken(*_: object) -> None:
        raise RuntimeError("a listener bug")

    async def drift(at: float, pool: str | None, used: str | None, outcome: str, talk: int) -> None:
        heard.append((at, pool, used, outcome, talk))

    rig.intakes[-1].on_call_ended += [broken, drift]
    await rig.up(link)
    await rig.server.play(events("ami-answered"))
    await eventually(lambda: rig.row(uniqueid))
    await link.flush()
    assert heard == [(rig.clock.now(), "reminders", number, "answered", 20)]


async def test_calls_we_did_not_place_leave_no_trace(rig: Rig) -> None:
    # One real call of ours is in progress, so tracking and the store are live...
    ours, ours_linked = "1795340000.1", "1795340000.0"
    await rig.place(ours)
    rig.server.live_channels = {ours: ours_linked}
    link = rig.link(late_row_delay=0.01)
    await rig.up(link)
    assert rig.metric("trustline_ami_calls_tracked") == 1
    # ...while other calls run. The busy capture ends with the tail of an older answered
    # call; inbound and agent-down calls never got a caller ID from us.
    captures = ("ami-inbound", "ami-agent-down", "ami-hangup-during-agi", "ami-busy")
    foreign = [e for c in captures for e in events(c)]
    before = link.events_seen
    await rig.server.play(foreign)
    await eventually(lambda: _true(link.events_seen - before == len(foreign)))
    await link.flush()
    await eventually(lambda: _true(len(rig.recordings) == 1))  # the busy call recorded
    # Only the busy call was tracked (it set TRUSTLINE_POOL: our AGI ran on it) and ended,
    # and no decision row is its: nothing stored. Every other channel was ignored (a tracked
    # one would have ended at its Hangup).
    assert link.calls_ended == 1
    assert rig.metric("trustline_ami_calls_tracked") == 1
    rows = await rig.db.fetchall("SELECT uniqueid FROM call_audit WHERE outcome IS NOT NULL")
    assert rows == []
    # Our call's own Hangup (a captured one, renamed) still ends it: the probe can see one.
    hangup = next(e for e in events("ami-busy") if e.startswith(b"Event: Hangup\r\n"))
    await rig.server.play(
        [with_header(with_header(hangup, "Uniqueid", ours), "Linkedid", ours_linked)]
    )
    ended = await eventually(lambda: _outcome(rig, ours))
    assert ended == "unknown"  # adopted on connect, no DialEnd seen, no Cdr
    assert link.calls_ended == 2


async def _outcome(rig: Rig, uniqueid: str) -> str | None:
    row = await rig.db.fetchone(
        "SELECT outcome FROM call_audit WHERE uniqueid = ? AND outcome IS NOT NULL", (uniqueid,)
    )
    return None if row is None else str(row[0])


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
    # Two patients, two calls (Uniqueids): the pool's threshold is 2 a day.
    other_call = with_header(ours, "Uniqueid", "1795344999.1")
    await rig.server.play([ours, other_call])
    state = await eventually(lambda: _quarantined(rig.outbound, "+33142000002"))
    assert state == "quarantined"
    ours_rows = await rig.db.fetchall("SELECT source FROM spam_reports WHERE ours = 1")
    assert [r[0] for r in ours_rows] == ["ivr", "ivr"]
    assert rig.metric("trustline_spam_reports_ami_total", source="ivr") == 3


async def test_screening_outcomes_from_the_dialplan_are_counted(rig: Rig) -> None:
    link = rig.link()
    await rig.up(link)
    report = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    screened = report.replace(b"UserEvent: SpamReport", b"UserEvent: TrustlineScreening")
    screened = with_header(with_header(screened, "Number", ""), "Source", "")
    passed = with_header(with_header(screened, "Verdict", "challenge"), "Outcome", "passed")
    blocked = with_header(with_header(screened, "Verdict", "block"), "Outcome", "blocked")
    forged = with_header(with_header(screened, "Verdict", "0612345678"), "Outcome", "x")
    await _play_all(rig, link, [passed, passed, blocked, forged])
    await link.flush()
    assert (
        rig.metric("trustline_screening_outcomes_total", verdict="challenge", outcome="passed") == 2
    )
    assert rig.metric("trustline_screening_outcomes_total", verdict="block", outcome="blocked") == 1
    assert rig.metric("trustline_screening_outcomes_total", verdict="other", outcome="other") == 1
    rows = await rig.db.fetchall("SELECT * FROM spam_reports")
    assert rows == []  # not a spam report


async def test_calls_the_dialplan_did_not_dial_are_counted(rig: Rig) -> None:
    link = rig.link()
    await rig.up(link)
    report = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    event = report.replace(b"UserEvent: SpamReport", b"UserEvent: TrustlineNotDialled")
    event = with_header(with_header(event, "Number", ""), "Source", "")
    late = with_header(event, "Status", "outside_window")
    opted = with_header(event, "Status", "opted_out")
    await _play_all(rig, link, [late, opted, late, with_header(event, "Status", "+3361")])
    await link.flush()
    counted = "trustline_calls_not_dialled_total"
    assert rig.metric(counted, status="outside_window") == 2
    assert rig.metric(counted, status="opted_out") == 1
    assert rig.metric(counted, status="other") == 1


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


# -- gaps in the event stream: outages, the re-sync window, shared PBXs, transfers ------------


def _at(stream: list[bytes], event: str, uniqueid: str) -> int:
    """Index of the first ``event`` of channel ``uniqueid`` in a captured stream."""
    head = f"Event: {event}\r\n".encode()
    ids = (f"\r\nUniqueid: {uniqueid}\r\n".encode(), f"\r\nUniqueID: {uniqueid}\r\n".encode())
    return next(i for i, e in enumerate(stream) if e.startswith(head) and any(m in e for m in ids))


async def _play_all(rig: Rig, link: AmiLink, messages: list[bytes]) -> None:
    """Play ``messages`` and wait until the link has read every one of them."""
    before = link.events_seen
    await rig.server.play(messages)
    await eventually(lambda: _true(link.events_seen - before >= len(messages)))


async def _stored(rig: Rig, uniqueid: str) -> dict[str, Any] | None:
    found = await rig.db.fetchone(
        "SELECT * FROM call_audit WHERE uniqueid = ? AND outcome IS NOT NULL", (uniqueid,)
    )
    return dict(found) if found is not None else None


async def _outage_during(rig: Rig, capture: str, drop_before: str) -> list[bytes]:
    """Our call is up; the link sees its events up to (not including) our ``drop_before``
    event, Asterisk drops the link, that event is lost, the link comes back while the call is
    still up. Returns the captured events still to come."""
    uniqueid, linkedid = SCENARIOS[capture]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    await rig.up(link)
    stream = events(capture)
    lost = _at(stream, drop_before, uniqueid)
    await _play_all(rig, link, stream[:lost])
    await rig.server.drop()
    await rig.up(link, logins=2)
    return stream[lost + 1 :]


async def test_call_answered_during_an_outage_takes_its_outcome_from_the_cdr(rig: Rig) -> None:
    uniqueid, _ = SCENARIOS["ami-answered"]
    rest = await _outage_during(rig, "ami-answered", drop_before="DialEnd")
    await rig.server.play(rest)  # ... Cdr ANSWERED 20 s, then our Hangup
    row = await eventually(lambda: rig.row(uniqueid))
    # Not "not_dialled": the DialEnd was lost, not missing; the Cdr tells how it went.
    assert (row["outcome"], row["dial_status"], row["talk_seconds"]) == ("answered", None, 20)
    assert rig.metric("trustline_call_outcomes_total", pool="reminders", outcome="answered") == 1


async def test_call_unanswered_during_an_outage_is_settled_by_its_late_cdr(rig: Rig) -> None:
    uniqueid, _ = SCENARIOS["ami-noanswer"]
    rest = await _outage_during(rig, "ami-noanswer", drop_before="DialEnd")
    await rig.server.play(rest)  # our Hangup, then the Cdr "NO ANSWER" (captured order)
    row = await eventually(lambda: rig.row(uniqueid))
    assert (row["outcome"], row["cdr_disposition"], row["talk_seconds"]) == (
        "no_answer",
        "NO ANSWER",
        0,
    )
    assert rig.metric("trustline_call_outcomes_total", pool="reminders", outcome="no_answer") == 1


async def test_call_ended_after_an_outage_without_a_cdr_is_unknown(rig: Rig) -> None:
    uniqueid, _ = SCENARIOS["ami-answered"]
    rest = await _outage_during(rig, "ami-answered", drop_before="DialEnd")
    # Asterisk without cdr_manager: no Cdr events at all.
    await rig.server.play([e for e in rest if not e.startswith(b"Event: Cdr\r\n")])
    row = await eventually(lambda: _stored(rig, uniqueid))
    assert (row["outcome"], row["talk_seconds"]) == ("unknown", None)


async def test_call_that_ended_during_an_outage_gets_no_outage_as_talk_time(rig: Rig) -> None:
    uniqueid, linkedid = SCENARIOS["ami-answered"]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    await rig.up(link)
    stream = events("ami-answered")
    await _play_all(rig, link, stream[: _at(stream, "DialEnd", uniqueid) + 1])  # answered
    # Asterisk drops us; the call ends 20 s later, its Hangup and Cdr are lost; we are back
    # after a 30 min outage.
    rig.server.live_channels = {}
    await rig.server.drop()
    rig.clock.advance(1800)
    await rig.up(link, logins=2)
    row = await eventually(lambda: _stored(rig, uniqueid))
    assert row["outcome"] == "answered"  # seen before the outage
    assert row["talk_seconds"] is None  # not known; never the 1800 s we were away


async def test_hangup_read_while_the_channel_list_is_answered_lands(rig: Rig) -> None:
    uniqueid, linkedid = SCENARIOS["ami-noanswer"]
    await rig.place(uniqueid)  # decided while AMI was down
    stream = events("ami-noanswer")
    after_agi = stream[next(i for i, e in enumerate(stream) if b"Value: SUCCESS" in e) :]
    # Asterisk lists the call as live, and it ends right after the snapshot: its events are
    # read while the link is still re-syncing.
    rig.server.live_channels = {uniqueid: linkedid}
    rig.server.after_channel_list = after_agi
    link = rig.link()
    await rig.up(link)
    row = await eventually(lambda: rig.row(uniqueid))
    assert row["outcome"] == "no_answer"
    assert rig.metric("trustline_ami_calls_tracked") == 0


async def test_agents_sharing_a_pbx_count_one_report_once(rig: Rig) -> None:
    # Two agents (one store) log in to the same PBX: each AMI session gets every UserEvent.
    first, second = rig.link(), rig.link(registry=CollectorRegistry())
    await rig.up(first)
    await rig.up(second)
    report = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    ours = with_header(report, "Number", "+33142000002")
    await rig.server.play([ours])  # one patient pressed 9 once
    await eventually(lambda: _report_count(rig, 1))
    await first.flush()
    await second.flush()
    assert await _report_count(rig, 1)
    assert await _quarantined(rig.outbound, "+33142000002") is None
    # The same event again is still one report; the service says so.
    again = await rig.outbound.report_spam("+33142000002", "ivr", event_id="1795344893.23")
    assert again.duplicate and not again.quarantined and again.reports_today == 1
    # A second patient's report (another call) counts, and reaches the threshold of 2.
    await rig.server.play([with_header(ours, "Uniqueid", "1795344999.1")])
    assert await eventually(lambda: _quarantined(rig.outbound, "+33142000002"))
    await first.flush()
    await second.flush()
    assert await _report_count(rig, 2)
    # Reports without an event (CLI, API) are never merged.
    await rig.outbound.report_spam("+33142000002", "agent")
    await rig.outbound.report_spam("+33142000002", "agent")
    assert await _report_count(rig, 4)


async def _report_count(rig: Rig, expected: int) -> bool:
    row = await rig.db.fetchone("SELECT count(*) FROM spam_reports WHERE ours = 1")
    return row is not None and row[0] == expected


@pytest.mark.parametrize("hangup_first", [False, True], ids=["cdrs-then-hangup", "hangup-first"])
async def test_transferred_call_adds_the_talk_time_of_each_cdr(
    rig: Rig, hangup_first: bool
) -> None:
    uniqueid, linkedid = SCENARIOS["ami-answered"]
    await rig.place(uniqueid)
    rig.server.live_channels = {uniqueid: linkedid}
    link = rig.link()
    await rig.up(link)
    stream = events("ami-answered")
    cdr_at, hangup_at = _at(stream, "Cdr", uniqueid), _at(stream, "Hangup", uniqueid)
    # The callee was transferred: one Cdr per bridge segment, 30 s then the captured 20 s.
    first_segment = with_header(stream[cdr_at], "BillableSeconds", "30")
    cdrs = [first_segment, stream[cdr_at]]
    before = [e for i, e in enumerate(stream[:hangup_at]) if i != cdr_at]
    await _play_all(rig, link, before)
    rig.clock.advance(45)  # our own measure: 45 s from the answer to the Hangup
    ending = [stream[hangup_at], *cdrs] if hangup_first else [*cdrs, stream[hangup_at]]
    await _play_all(rig, link, ending)
    await link.flush()
    row = await rig.row(uniqueid)
    assert row is not None
    assert row["outcome"] == "answered"
    assert row["talk_seconds"] == 50  # 30 + 20, counted once
