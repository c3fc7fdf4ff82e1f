"""The audit trail: hash chain and verify, retention, the auditor's export. Real SQLite file;
tampering is done with the sqlite3 module directly, as someone with the file would."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent import phone
from agent.cli import compliance as compliance_cli
from agent.clock import FrozenClock
from agent.compliance.config import parse_compliance
from agent.compliance.export import export_rows, write_csv, write_jsonl
from agent.compliance.service import ComplianceService
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.recordings.repo import RecordingsRepo
from agent.settings import Settings
from agent.store import Database, open_database

PARIS = ZoneInfo("Europe/Paris")
DAY = 86400.0
KEY = b"k" * 32
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=PARIS).timestamp()
RETENTION = """
[retention]
call_audit = 30
outcomes = 15
screening_decisions = 10
spam_reports = 20
optout_events = 40
"""


Store = tuple[Database, ComplianceService, Path]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Database, ComplianceService, Path]]:
    path = tmp_path / "data" / "trustline.sqlite3"
    db = await open_database(path)
    clock = FrozenClock(NOW)
    loaded = parse_compliance(RETENTION)
    service = ComplianceService(db, clock, KEY, loaded.compliance)
    await service.start(refresh_seconds=None)
    yield db, service, path
    await db.close()


async def add_calls(db: Database, ages_in_days: list[float], callee: str = "h") -> None:
    records = [
        AuditRecord(
            NOW - age * DAY,
            f"u{i}",
            "survey",
            "clinic",
            "+33142000001",
            "ok",
            "least_used",
            f"{callee}{i}",
            f"CASE-{i}",
        )
        for i, age in enumerate(ages_in_days)
    ]
    await OutboundRepo(db).write_audit(records, {})


async def add_recording_access(db: Database, at: float) -> None:
    repo = RecordingsRepo(db)
    rec = await repo.record_sealed(
        uniqueid="1795344829.3", path="/rec/a.tlrec", source_name="a.wav", recorded_at=at,
        sealed_at=at, plain_size=10, size=20, key_id="k1", sha256="00",
    )  # fmt: skip
    audit = await repo.audit_started(
        at=at, action="decrypt", recording_id=rec, operator="dr.house", reason="complaint 12",
        detail={"out": "/tmp/x.wav"},
    )  # fmt: skip
    await repo.audit_outcome(audit, "ok")


async def count(db: Database, table: str) -> int:
    row = await db.fetchone(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


def tamper(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


async def test_an_untouched_trail_verifies(store: Store) -> None:
    db, service, _ = store
    await add_calls(db, [3, 2, 1])
    await add_recording_access(db, NOW - DAY)
    await service.add_optout("0612345678", "survey", "cli", actor="alice")
    assert await service.chain.extend(NOW) == 5
    assert await service.chain.extend(NOW) == 0  # nothing new
    report = await service.chain.verify()
    assert report.ok, report.problems
    assert (report.entries, report.rows) == (5, 5)


async def test_verify_names_an_edited_row(store: Store) -> None:
    db, service, path = store
    await add_calls(db, [3, 2, 1])
    await add_recording_access(db, NOW - DAY)
    await service.chain.extend(NOW)
    tamper(path, "UPDATE call_audit SET status = 'refused' WHERE id = 2")
    tamper(path, "UPDATE recording_audit SET operator = 'nobody' WHERE action = 'decrypt'")
    report = await service.chain.verify()
    assert report.problems == ["edited: call_audit row 2", "edited: recording_audit row 1"]


async def test_verify_names_a_deleted_row(store: Store) -> None:
    db, service, path = store
    await add_calls(db, [3, 2, 1])
    await service.chain.extend(NOW)
    tamper(path, "DELETE FROM call_audit WHERE id = 3")
    assert (await service.chain.verify()).problems == ["deleted: call_audit row 3"]


async def test_verify_names_a_row_inserted_between_chained_rows(store: Store) -> None:
    db, service, path = store
    await add_calls(db, [5, 4, 3, 2, 1])
    # An id that was never used (PostgreSQL sequences skip ids on rollback).
    tamper(path, "DELETE FROM call_audit WHERE id = 3")
    await service.chain.extend(NOW)
    assert (await service.chain.verify()).ok
    tamper(
        path,
        "INSERT INTO call_audit (id, at, purpose, status, reason) VALUES (3, ?, 'survey', 'ok', 'x')",
        NOW - 3 * DAY,
    )
    assert (await service.chain.verify()).problems == [
        "inserted: call_audit row 3 (not in the chain)"
    ]


async def test_a_rewritten_chain_entry_breaks_the_links_and_the_daily_anchor(store: Store) -> None:
    db, service, path = store
    await add_calls(db, [3, 2, 1])
    await service.chain.extend(NOW)
    assert await service.chain.anchor(NOW) is not None
    # Edit a row and recompute its own hash in the chain: the next link no longer matches.
    tamper(path, "UPDATE call_audit SET status = 'refused' WHERE id = 1")
    with sqlite3.connect(path) as conn:
        values = conn.execute(
            "SELECT id, at, uniqueid, purpose, pool, number, status, reason, callee_hash,"
            " case_ref FROM call_audit WHERE id = 1"
        ).fetchone()
        from agent.compliance.chain import row_hash

        conn.execute(
            "UPDATE audit_chain SET row_hash = ? WHERE tbl = 'call_audit' AND row_id = 1",
            (row_hash("call_audit", values),),
        )
    problems = (await service.chain.verify()).problems
    assert "chain entry 2: does not follow the entry before it (the chain was edited)" in problems
    assert any(p.startswith("anchor 2026-11-30 (entry 3)") for p in problems)


async def test_new_rows_are_chained_only_once_settled(store: Store) -> None:
    db, service, _ = store
    await add_calls(db, [1, 0])  # the second is decided right now: still being written
    assert await service.chain.extend(NOW) == 1
    report = await service.chain.verify()
    assert report.ok and report.unchained == {"call_audit": 1}
    assert await service.chain.extend(NOW + 10) == 1


async def test_retention_deletes_exactly_the_rows_past_their_period(store: Store) -> None:
    db, service, _ = store
    await add_calls(db, [31, 30.01, 29.99, 1])  # call_audit: 30 days
    await db.execute("UPDATE call_audit SET outcome = 'answered', talk_seconds = 30")
    for age in (10.5, 9.5):  # screening_decisions: 10 days
        await db.execute(
            "INSERT INTO screening_decisions (at, dialled, caller_masked, attestation, score,"
            " verdict, reasons) VALUES (?, '+33142000001', '***5678', 'A', 0, 'allow', '')",
            (NOW - age * DAY,),
        )
    for age in (21, 19):  # spam_reports: 20 days
        await db.execute(
            "INSERT INTO spam_reports (number, reported_at, day, source, ours)"
            " VALUES ('+33142000001', ?, '2026-11-01', 'ivr', 1)",
            (NOW - age * DAY,),
        )
    clock = service._clock  # the fixture's FrozenClock
    assert isinstance(clock, FrozenClock)
    clock.set(NOW - 41 * DAY)
    await service.add_optout("0612345678", "survey", "cli")
    clock.set(NOW)
    await service.add_optout("0612345679", "survey", "cli")
    await service.chain.extend(NOW)

    dry = {p.table: p.rows for p in await service.purge(dry_run=True)}
    assert dry == {
        "call_audit": 2,
        "outcomes": 3,  # 31, 30.01 and 29.99 days old (older than 15 days)
        "screening_decisions": 1,
        "spam_reports": 1,
        "optout_events": 1,
    }
    assert await count(db, "call_audit") == 4

    done = {p.table: p.rows for p in await service.purge(dry_run=False, actor="alice")}
    assert done == dry | {"outcomes": 1}  # two of the three went with their call_audit rows
    left = await db.fetchall("SELECT case_ref, outcome FROM call_audit ORDER BY id")
    assert [tuple(r) for r in left] == [("CASE-2", None), ("CASE-3", "answered")]
    assert await count(db, "screening_decisions") == 1
    assert await count(db, "spam_reports") == 1
    assert await count(db, "optout_events") == 1
    assert await count(db, "optouts") == 2  # wishes stay
    # The purge is in the chain: the rows it deleted are not reported as tampering.
    await service.chain.extend(NOW)
    report = await service.chain.verify()
    assert report.ok, report.problems


async def test_the_export_has_every_call_admin_action_and_access_and_no_number(
    store: Store,
) -> None:
    db, service, _ = store
    patient = "+33612345678"
    await add_calls(db, [2, 1], callee=phone.keyed_hash(KEY, patient))
    await add_recording_access(db, NOW - DAY)
    await service.add_optout(patient, "survey", "cli", actor="alice")
    await db.execute(
        "UPDATE recording_audit SET reason = 'patient +33612345678 asked' WHERE action = 'decrypt'"
    )
    rows = await export_rows(service.repo, NOW - 3 * DAY, NOW + 1, PARIS)
    assert [r["kind"] for r in rows] == ["call", "call", "recording_access", "admin"]
    assert rows[0]["time"] == "2026-11-28T12:00:00+01:00"
    assert rows[0]["case_ref"] == "CASE-0" and rows[0]["number_used"] == "+33142000001"
    assert rows[2]["reason"] == "patient ***5678 asked"
    text = io.StringIO()
    write_csv(rows, text)
    lines = text.getvalue().splitlines()
    assert lines[0] == (
        "kind,time,purpose,case_ref,pool,number_used,status,reason,outcome,callee_hash,"
        "actor,action,target,detail"
    )
    assert len(list(csv.DictReader(io.StringIO(text.getvalue())))) == 4
    jsonl = io.StringIO()
    write_jsonl(rows, jsonl)
    assert [json.loads(line)["kind"] for line in jsonl.getvalue().splitlines()][-1] == "admin"
    for dump in (text.getvalue(), jsonl.getvalue()):
        assert "612345678" not in dump


def cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    compliance_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    (tmp_path / "pools.toml").write_text(RETENTION, encoding="utf-8")
    settings = Settings(config=tmp_path / "pools.toml", data_dir=tmp_path / "data")
    code: int = asyncio.run(args.handler(args, settings))
    return code


async def test_the_audit_commands_verify_export_and_purge(
    store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    db, service, path = store
    await add_calls(db, [400, 2])
    with caplog.at_level(logging.DEBUG, logger="agent"):
        await service.add_optout("0612345678", "survey", "cli", actor="alice")
        await service.on_user_event(
            {"UserEvent": "OptOut", "Number": "0612345670", "Purpose": "x y"}
        )
    assert await asyncio.to_thread(cli, tmp_path, "audit", "verify") == 0
    assert capsys.readouterr().out.rstrip().endswith(": OK")
    tamper(path, "UPDATE call_audit SET reason = 'local_presence' WHERE id = 2")
    assert await asyncio.to_thread(cli, tmp_path, "audit", "verify") == 1
    out = capsys.readouterr().out
    assert out.startswith("edited: call_audit row 2\n")
    out_file = tmp_path / "export.csv"
    code = await asyncio.to_thread(
        cli, tmp_path, "audit", "export", "--from", "2025-01-01", "--to", "2026-12-31",
        "--out", str(out_file),
    )  # fmt: skip
    assert code == 0
    exported = out_file.read_text(encoding="utf-8")
    assert exported.count("\ncall,") == 2 and "optout_add" in exported
    assert await asyncio.to_thread(cli, tmp_path, "audit", "purge", "--dry-run") == 0
    assert "call_audit: would delete 1 rows" in capsys.readouterr().out
    assert await count(db, "call_audit") == 2
    for text in (exported, caplog.text):
        assert "612345678" not in text and "612345670" not in text
