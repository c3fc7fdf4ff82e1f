"""Compliance on every store backend: SQLite (a real file) and PostgreSQL (a fresh schema of
the machine's server): opt-outs, attempts, the chain and its verify, retention."""

from __future__ import annotations

from agent import phone
from agent.clock import FrozenClock
from agent.compliance.config import parse_compliance
from agent.compliance.service import ComplianceService
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.store import Database, open_database
from tests.postgres_schema import db, store_url

KEY = b"k" * 32
NOW = 1_795_000_000.0
DAY = 86400.0
PATIENT = "0612345678"


__all__ = ["db", "store_url"]  # the contract fixtures, on both backends


async def service_on(db: Database) -> ComplianceService:
    loaded = parse_compliance(
        "[limits]\nsurvey = { attempts = 2, days = 7 }\n[retention]\ncall_audit = 30\n"
    )
    service = ComplianceService(db, FrozenClock(NOW), KEY, loaded.compliance)
    await service.start(refresh_seconds=None)
    return service


async def test_opt_outs_attempts_chain_and_retention(store_url: str, db: Database) -> None:
    service = await service_on(db)
    hashed = phone.keyed_hash(KEY, phone.to_e164(PATIENT, "FR"))
    await OutboundRepo(db).write_audit(
        [
            AuditRecord(
                NOW - age * DAY,
                f"u{age}",
                "survey",
                "clinic",
                "+33142000001",
                "ok",
                "least_used",
                hashed,
                None,
            )
            for age in (40, 2, 1)
        ],
        {},
    )
    event = {"UserEvent": "OptOut", "Number": PATIENT, "Purpose": "results", "Uniqueid": "1.1"}
    assert await service.on_user_event(event)
    # A second agent on the same store receives the same event: stored once.
    second = await open_database(store_url)
    try:
        other = await service_on(second)
        assert not await other.on_user_event(event)
        assert (await other.check("results", PATIENT)).status == "opted_out"
        assert (await other.check("survey", PATIENT)).status == "attempts_exceeded"
    finally:
        await second.close()

    assert await service.chain.extend(NOW) == 3
    assert (await service.chain.verify()).ok
    await db.execute("UPDATE call_audit SET reason = 'local_presence' WHERE uniqueid = 'u2'")
    problems = (await service.chain.verify()).problems
    assert len(problems) == 1 and problems[0].startswith("edited: call_audit row ")
    await db.execute("UPDATE call_audit SET reason = 'least_used' WHERE uniqueid = 'u2'")

    plans = {p.table: p.rows for p in await service.purge(dry_run=False)}
    assert plans["call_audit"] == 1  # the 40-day-old row
    assert (await service.chain.verify()).ok


async def test_a_purpose_without_rules_still_stops_whoever_opted_out_of_it(db: Database) -> None:
    """reminder has no window and no limit: only the opt-outs stop its calls, from the first
    one added here, one added by another process, until each is removed."""
    service = await service_on(db)
    other_patient = "0612345679"
    assert (await service.check("reminder", PATIENT)).allowed
    assert await service.add_optout(PATIENT, "reminder", "cli")
    assert (await service.check("reminder", PATIENT)).status == "opted_out"
    assert (await service.check("reminder", other_patient)).allowed
    assert (await service.check("results", PATIENT)).allowed  # another purpose
    await service.remove_optout(PATIENT, "reminder", actor="admin")
    assert (await service.check("reminder", PATIENT)).allowed
    other = await service_on(db)  # another agent or the CLI, on the same store
    assert await other.add_optout(other_patient, "reminder", "cli")
    await service.refresh()
    assert (await service.check("reminder", other_patient)).status == "opted_out"
    await other.remove_optout(other_patient, "reminder", actor="admin")
    await service.refresh()
    assert (await service.check("reminder", other_patient)).allowed
