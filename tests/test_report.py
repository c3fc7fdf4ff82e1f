"""Weekly report and the reputation CLI, on a real SQLite store filled by a simulated week."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent import phone
from agent.alerts.config import Webhook
from agent.alerts.deliver import Deliverer
from agent.alerts.service import AlertService
from agent.cli import build_parser
from agent.clock import FrozenClock
from agent.config import load_config
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.outcomes.calls import CallEnded
from agent.outcomes.repo import OutcomeRepo
from agent.outcomes.report import next_report_at, parse_week
from agent.outcomes.weekly import WeeklyReporter
from agent.settings import Settings, load_settings
from agent.store.db import open_database
from tests.test_alerts import SECRET, Receiver, receiver

__all__ = ["receiver"]  # the webhook receiver fixture

PARIS = ZoneInfo("Europe/Paris")
POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = 80

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc" },
]

[pools.results]
purposes = ["results"]
timezone = "America/New_York"
region = "US"
numbers = [ { number = "+12125550101", name = "Clinic NYC", daily_cap = 40 } ]

[pools.reserve]
reserve = true
numbers = [ { number = "+33142000099", name = "Clinique StMarc" } ]
"""
OUTCOMES = ["answered"] * 5 + ["no_answer"] * 4 + ["busy", "congestion", "cancelled", "unknown"]
PATIENTS = [f"+3361234{i:04d}" for i in range(50)]
HASH_KEY = b"k" * 32


async def _agent_store(settings: Settings) -> None:
    """The store as the agent's first start leaves it (admin commands never create one)."""
    await (await open_database(settings.database_path)).close()


def settings_for(tmp_path: Path) -> Settings:
    config = tmp_path / "pools.toml"
    config.write_text(textwrap.dedent(POOLS), encoding="utf-8")
    return load_settings(data_dir=tmp_path / "data", config=config)


def cli(settings: Settings, *argv: str) -> int:
    """The sub-command as `trustline` parses it, run against ``settings``."""
    args = build_parser().parse_args(argv)
    code: int = asyncio.run(args.handler(args, settings))
    return code


async def fill_week(settings: Settings) -> None:
    """2026-W47 (and a day either side), calls from both pools, every kind of outcome."""
    rng = random.Random(47)
    db = await open_database(settings.database_path)
    try:
        out, ends = OutboundRepo(db), OutcomeRepo(db)
        records, finished = [], []
        start = datetime(2026, 11, 15, 9, 0, tzinfo=PARIS)  # the Sunday before
        for day in range(9):
            for number, pool in (
                ("+33142000001", "reminders"),
                ("+33142000002", "reminders"),
                ("+12125550101", "results"),
            ):
                for i in range(rng.randint(5, 25)):
                    at = (start + timedelta(days=day, minutes=37 * i)).timestamp()
                    uid = f"{at:.0f}.{i}{number[-2:]}"
                    patient = rng.choice(PATIENTS)
                    records.append(
                        AuditRecord(at, uid, "reminder", pool, number, "ok", "least_used",
                                    phone.keyed_hash(HASH_KEY, patient), None)
                    )  # fmt: skip
                    outcome = rng.choice(OUTCOMES)
                    talk = rng.randint(5, 200) if outcome == "answered" else 0
                    finished.append(CallEnded(uid, uid, outcome, None, 16, talk, at + 60))
        await out.write_audit(records, {})
        for ended in finished:
            await ends.record_end(ended)
        monday = datetime(2026, 11, 16, 12, 0, tzinfo=PARIS).timestamp()
        await out.add_report("+33142000002", monday, "2026-11-16", "ivr", True)
        await out.add_report(PATIENTS[0], monday, "2026-11-16", "ivr", False)  # not ours
        await out.add_rest("+33142000001", monday + 3600, monday + 48 * 3600, "intensive")
        alerts = AlertService(db, FrozenClock(monday + 7200))
        await alerts.raise_(
            "number_drift", "+33142000002", "***0002 in reminders: 3/40 answered vs peers 41%",
            details={"pool": "reminders", "since": monday - 3 * 3600, "calls": 40},
        )  # fmt: skip
    finally:
        await db.close()


def test_weekly_report_totals_match_trustline_stats_and_show_no_patient_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path)
    asyncio.run(fill_week(settings))
    out = tmp_path / "reports"
    assert cli(settings, "report", "weekly", "--week", "2026-W47", "--out", str(out)) == 0
    capsys.readouterr()
    assert cli(settings, "stats", "--from", "2026-11-16", "--to", "2026-11-22", "--json") == 0
    pool_lines = capsys.readouterr().out.splitlines()
    assert cli(settings, "stats", "--from", "2026-11-16", "--to", "2026-11-22", "--json",
               "--by-number") == 0  # fmt: skip
    number_lines = capsys.readouterr().out.splitlines()
    expected = [json.loads(line) for line in pool_lines + number_lines]
    assert len(expected) > 14  # both pools, every day

    rows = list(csv.DictReader(io.StringIO((out / "trustline-2026-W47.csv").read_text())))
    as_text = [{k: "" if v is None else str(v) for k, v in row.items()} for row in expected]
    assert rows == as_text
    html = (out / "trustline-2026-W47.html").read_text()
    total_calls = sum(r["dialled"] + r["unseen"] for r in map(json.loads, pool_lines))
    assert f"<td>{total_calls}</td>" in html
    assert "<svg" in html and "<polyline" in html and "http://cdn" not in html
    assert "<script" not in html
    assert "number_drift" in html and "300 min" in html  # statistic left zero 5 h before
    assert "2026-11-16 13:00 UTC" in html  # first seen
    for text in (html, (out / "trustline-2026-W47.csv").read_text()):
        for patient in PATIENTS:
            assert patient not in text
            assert phone.keyed_hash(HASH_KEY, patient) not in text
            assert patient[-9:] not in text


def test_alerts_list_and_ack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path)
    asyncio.run(fill_week(settings))
    capsys.readouterr()
    assert cli(settings, "alerts", "--open", "--json") == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["kind"], listed["acked_at"]) == ("number_drift", None)
    assert cli(settings, "alerts", "ack", str(listed["id"])) == 0
    assert cli(settings, "alerts") == 0
    table = capsys.readouterr().out
    assert "number_drift" in table and "yes" in table
    with pytest.raises(Exception, match="no alert with id 999"):
        cli(settings, "alerts", "ack", "999")


def test_reputation_import_flags_our_listed_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for(tmp_path)
    asyncio.run(_agent_store(settings))
    listing = tmp_path / "vendor.csv"
    listing.write_text("number,label\n01 42 00 00 01,Spam Likely\n+33699999999,spam\n")
    assert cli(settings, "reputation", "import", str(listing)) == 0
    assert "1 of our numbers (1 flagged), 1 others ignored" in capsys.readouterr().out
    assert cli(settings, "alerts", "--open", "--json") == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["kind"], listed["subject"]) == ("reputation_flag", "+33142000001")
    assert listed["payload"]["source"] == "csv:vendor.csv"


def test_week_parsing_and_the_monday_schedule() -> None:
    assert str(parse_week("2026-W48")) == "2026-11-23"
    with pytest.raises(Exception, match="YYYY-Www"):
        parse_week("2026-48")
    sunday = datetime(2026, 11, 22, 23, 0, tzinfo=PARIS).timestamp()
    monday_7 = datetime(2026, 11, 23, 7, 0, tzinfo=PARIS).timestamp()
    assert next_report_at(sunday, PARIS) == monday_7
    assert next_report_at(monday_7, PARIS) == monday_7 + 7 * 86400


async def test_monday_7am_writes_last_weeks_report_and_posts_it_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = settings_for(tmp_path)
    await fill_week(settings)
    config = load_config(settings.config)
    clock = FrozenClock(datetime(2026, 11, 23, 6, 59, tzinfo=PARIS))
    db = await open_database(settings.database_path)
    hooks = [Webhook(receiver.url, SECRET)]
    alerts = AlertService(db, clock, hooks)
    deliverer = Deliverer(db, clock, hooks)
    reporter = WeeklyReporter(db, clock, alerts, lambda: config, tmp_path / "reports")
    try:
        assert await reporter.run_due() is None  # 06:59: not yet
        clock.advance(60)
        written = await reporter.run_due()
        assert written is not None and written.name == "trustline-2026-W47.html"
        assert await reporter.run_due() is None  # once a week
        # An agent restarted later that Monday does not make (or post) it again either.
        clock.advance(3 * 3600)
        again = WeeklyReporter(db, clock, alerts, lambda: config, tmp_path / "reports")
        assert await again.run_due() is None
        await deliverer.run_once()
    finally:
        await deliverer.stop()
        await db.close()
    ((key, body),) = receiver.acked
    assert key == "report-2026-W47"
    assert body["report"]["calls"] == 263  # type: ignore[index]  # JSON body: dict[str, object]
    assert receiver.bad_signatures == 0
