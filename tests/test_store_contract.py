"""The store contract, run on every backend: SQLite (a real file) and PostgreSQL (a fresh
schema of the machine's server per test). Two Database objects on one store are two agents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.errors import ConfigError, StoreError
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.outcomes.calls import CallEnded, CdrSeen
from agent.outcomes.repo import OutcomeRepo
from agent.recordings.repo import RecordingsRepo
from agent.screening.repo import DecisionRow, ScreeningRepo
from agent.store import Database, SchemaTooNew, open_database
from agent.store.base import migrations
from tests.postgres_schema import db, fresh_schema, store_url

DAY = "2026-11-17"


__all__ = ["db", "store_url"]  # the contract fixtures, on both backends


@pytest.fixture
async def other(store_url: str, db: Database) -> AsyncIterator[Database]:
    """A second agent on the same store."""
    database = await open_database(store_url)
    yield database
    await database.close()


def _backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def test_every_sqlite_migration_has_a_postgres_twin_and_back() -> None:
    sqlite = {m.version: m.name for m in migrations("sqlite")}
    postgres = {m.version: m.name for m in migrations("postgres")}
    assert sqlite == postgres


async def test_migrations_are_recorded_once(store_url: str, db: Database) -> None:
    rows = await db.fetchall("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r[0], r["name"]) for r in rows] == [
        (m.version, m.name) for m in migrations(_backend(store_url))
    ]
    again = await open_database(store_url)  # reopening applies nothing twice
    count = await again.fetchone("SELECT COUNT(*) FROM schema_migrations")
    await again.close()
    assert count is not None and count[0] == len(rows)


async def test_agents_starting_together_on_postgres_migrate_once() -> None:
    """The advisory lock: four agents start at once on an empty schema."""
    async for url in fresh_schema():
        dbs = await asyncio.gather(*(open_database(url) for _ in range(4)))
        count = await dbs[0].fetchone("SELECT COUNT(*) FROM schema_migrations")
        for d in dbs:
            await d.close()
        assert count is not None and count[0] == len(migrations("postgres"))


async def test_a_database_newer_than_the_agent_is_refused(store_url: str, db: Database) -> None:
    await db.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, '9999_x.sql')")
    with pytest.raises(SchemaTooNew, match="schema version 9999, newer than this agent knows"):
        await open_database(store_url)


async def test_a_failed_statement_rolls_the_transaction_back(db: Database) -> None:
    with pytest.raises(StoreError):
        async with db.transaction():
            await db.execute("INSERT INTO alerts (at, kind, message) VALUES (1, 'k', 'x')")
            await db.execute("INSERT INTO no_such_table VALUES (1)")
    row = await db.fetchone("SELECT COUNT(*) FROM alerts")
    assert row is not None and row[0] == 0


async def test_a_cancelled_transaction_leaves_the_store_usable(db: Database) -> None:
    started = asyncio.Event()

    async def slow_writer() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO alerts (at, kind, message) VALUES (1, 'k', 'half')")
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(slow_writer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO alerts (at, kind, message) VALUES (2, 'k', 'whole')")
    assert [r[0] for r in await db.fetchall("SELECT message FROM alerts")] == ["whole"]


async def test_transactions_of_two_agents_serialise(db: Database, other: Database) -> None:
    """Read-modify-write inside transactions never loses an update across agents."""
    await db.execute("INSERT INTO alerts (at, kind, message) VALUES (0, 'counter', '0')")

    async def bump(d: Database) -> None:
        async with d.transaction() as tx:
            row = await tx.fetchone("SELECT message FROM alerts WHERE kind = 'counter'")
            assert row is not None
            await asyncio.sleep(0)
            await tx.execute(
                "UPDATE alerts SET message = ? WHERE kind = 'counter'", (str(int(row[0]) + 1),)
            )

    await asyncio.gather(*(bump(db if i % 2 else other) for i in range(20)))
    row = await db.fetchone("SELECT message FROM alerts WHERE kind = 'counter'")
    assert row is not None and row[0] == "20"


async def test_concurrent_claims_of_two_agents_never_pass_a_cap(
    db: Database, other: Database
) -> None:
    repos = [OutboundRepo(db), OutboundRepo(other)]
    numbers = [f"+3314200000{i}" for i in range(5)]
    cap = 7

    async def claim(i: int) -> dict[str, int]:
        # Each call claims a batch of distinct numbers, as the claim batcher sends them.
        batch = [(n, DAY, cap) for n in numbers[i % 3 :]]
        return await repos[i % 2].claim_many(batch)

    results = await asyncio.gather(*(claim(i) for i in range(60)))
    granted: dict[str, list[int]] = {n: [] for n in numbers}
    for counts in results:
        for number, count in counts.items():
            granted[number].append(count)
    assert {n: sorted(c) for n, c in granted.items()} == {n: list(range(1, 8)) for n in numbers}
    stored = await repos[0].usage_since(DAY)
    assert sorted(stored) == [(n, DAY, cap) for n in numbers]


async def test_one_spam_report_seen_by_two_agents_counts_once(
    db: Database, other: Database
) -> None:
    first, second = OutboundRepo(db), OutboundRepo(other)
    results = await asyncio.gather(
        first.add_report("+33142000001", 10.0, DAY, "ami", True, event_id="1700000000.42"),
        second.add_report("+33142000001", 10.1, DAY, "ami", True, event_id="1700000000.42"),
    )
    assert sorted(results) == [(1, False), (1, True)]
    # Reports without an event id (CLI, API) are never merged.
    assert await first.add_report("+33142000001", 11.0, DAY, "cli", True) == (2, True)
    assert await second.add_report("+33142000001", 12.0, DAY, "cli", True) == (3, True)


async def test_rests_and_quarantines_are_seen_by_the_other_agent(
    db: Database, other: Database
) -> None:
    first, second = OutboundRepo(db), OutboundRepo(other)
    await first.add_rest("+33142000001", 100.0, 200.0, "intensive")
    await first.quarantine("+33142000002", 100.0, 300.0, "spam reports")
    await first.bump_state_version()
    assert await second.state_version() == 1
    assert await second.rests_after(150.0) == [("+33142000001", 100.0, 200.0)]
    assert await second.quarantines_after(150.0) == [("+33142000002", 300.0)]
    assert await second.reinstate("+33142000002", 160.0)
    assert await first.quarantines_after(150.0) == []
    assert not await second.reinstate("+33142000009", 160.0)


async def test_numbers_usage_audit_and_alerts(db: Database) -> None:
    repo = OutboundRepo(db)
    await repo.sync_numbers([("+33142000001", "A", True), ("+33142000002", "R", True)])
    await repo.set_serving_pool("+33142000002", "A", 50.0)
    await repo.sync_numbers([("+33142000001", "B", True), ("+33142000002", "R", True)])
    rows = {r.number: r for r in await repo.numbers()}
    assert rows["+33142000001"].home_pool == "B" and rows["+33142000001"].active
    assert rows["+33142000002"].serving_pool is None  # pool A left the config
    assert await repo.claim("+33142000001", DAY, 2) == 1
    assert await repo.usage_for("+33142000001", [DAY, "2026-11-16"]) == {DAY: 1}
    record = AuditRecord(
        60.5, "1700.1", "reminder", "B", "+33142000001", "ok", "local", "ab" * 32, None
    )
    await repo.write_audit([record, record], {"+33142000001": 60.5})
    rows = {r.number: r for r in await repo.numbers()}
    assert rows["+33142000001"].last_used_at == 60.5
    await repo.add_alert(61.0, "exhausted", "B", "pool B has no usable number")
    alert = await db.fetchone("SELECT kind, pool FROM alerts")
    assert alert is not None and (alert["kind"], alert["pool"]) == ("exhausted", "B")


async def test_a_sync_judges_the_numbers_whatever_order_they_are_stored_in(db: Database) -> None:
    """A restart with the config as stored writes nothing; the same numbers listed in another
    order, one moved to another pool and one left out, are written as the config says."""
    repo = OutboundRepo(db)
    config = [("+33142000001", "A", True), ("+33142000002", "A", True), ("+33142000003", "R", True)]
    await repo.sync_numbers(config)
    await repo.sync_numbers(config)
    await repo.sync_numbers([("+33142000003", "R", True), ("+33142000001", "B", True)])
    rows = {r.number: (r.home_pool, r.active) for r in await repo.numbers()}
    assert rows == {
        "+33142000001": ("B", True),
        "+33142000002": ("A", False),
        "+33142000003": ("R", True),
    }


async def test_new_numbers_are_written_with_their_presence_in_one_pass(db: Database) -> None:
    """A first start writes each number's area with its row; a number already stored keeps
    the area it has (the key depends on the number alone)."""
    repo = OutboundRepo(db)
    area = {"+33142000001": "FR-75", "+33612000001": None}.get
    await repo.sync_numbers([("+33142000001", "A", True), ("+33612000001", "A", True)], area)
    await repo.sync_numbers(
        [("+33142000001", "B", True), ("+33142000002", "B", True)], lambda n: "FR-X"
    )
    rows = await db.fetchall("SELECT number, presence FROM numbers ORDER BY number")
    assert [(r[0], r[1]) for r in rows] == [
        ("+33142000001", "FR-75"),
        ("+33142000002", "FR-X"),
        ("+33612000001", ""),
    ]


async def test_call_outcomes(db: Database) -> None:
    audit = AuditRecord(100.0, "1700.7", "reminder", "A", "+33142000001", "ok", "x", None, None)
    await OutboundRepo(db).write_audit([audit], {})
    outcomes = OutcomeRepo(db)
    assert await outcomes.awaiting_outcome(0.0, 200.0) == [("1700.7", "")]
    ended = CallEnded("1700.7", "1700.6", "unknown", None, None, None, 130.0)
    assert await outcomes.record_end(ended) == ("A", "+33142000001", 100.0)
    settles = CdrSeen("1700.7", "ANSWERED", 25, "answered")
    assert await outcomes.record_cdr(settles) == ("A", "answered", True)
    # The same Cdr seen again (another agent's AMI link): the outcome is settled once.
    assert await outcomes.record_cdr(CdrSeen("1700.7", "ANSWERED", 0, "answered")) == (
        "A",
        "answered",
        False,
    )
    assert await outcomes.record_cdr(CdrSeen("1700.7", "ANSWERED", 5)) == ("A", "answered", False)
    assert await outcomes.record_end(CallEnded("nope", "", "busy", "BUSY", 17, 0, 1.0)) is None
    rows = await outcomes.outcomes(0.0, 200.0, pool="A")
    assert [(r.outcome, r.talk_seconds) for r in rows] == [("answered", 30)]


async def test_screening_lists_and_decisions(db: Database, other: Database) -> None:
    repo, seen_by_other = ScreeningRepo(db), ScreeningRepo(other)
    assert await repo.add_entry("block", "+33999*", 1.0, "robocalls")
    assert not await repo.add_entry("block", "+33999*", 2.0, "renamed")
    assert await seen_by_other.lists_version() == 2
    [entry] = await seen_by_other.list_entries("block")
    assert (entry.entry, entry.note) == ("+33999*", "renamed")
    assert await repo.remove_entry("block", "+33999*")
    assert not await repo.remove_entry("block", "+33999*")
    await repo.record_decisions(
        [DecisionRow(5.0, "u1", "+33142000001", "h" * 64, "***0001", "A", 10, "allow", "")]
    )
    row = await db.fetchone("SELECT verdict, score FROM screening_decisions")
    assert row is not None and (row[0], row[1]) == ("allow", 10)
    audit = AuditRecord(7.0, "u2", "reminder", "A", "+33142000001", "ok", "x", "c" * 64, None)
    await OutboundRepo(db).write_audit([audit], {})
    last = await repo.last_audit_id()
    assert await repo.latest_calls(0.0, up_to_id=last) == {"c" * 64: 7.0}
    assert [h for _, h, _ in await repo.audit_after(0, 10)] == ["c" * 64]


async def test_recordings_metadata(db: Database) -> None:
    repo = RecordingsRepo(db)
    rid = await repo.record_sealed(
        uniqueid="1700.1",
        path="/r/a.tlrec",
        source_name="a.wav",
        recorded_at=1.0,
        sealed_at=2.0,
        plain_size=10,
        size=20,
        key_id="k1",
        sha256="s1",
    )
    assert (
        await repo.record_sealed(
            uniqueid=None,
            path="/r/a.tlrec",
            source_name="a.wav",
            recorded_at=1.0,
            sealed_at=3.0,
            plain_size=10,
            size=21,
            key_id="k1",
            sha256="s1",
        )
        == rid
    )
    await repo.set_pending(rid, "s2")
    await repo.rewrapped(rid, key_id="k2", sha256="s2", size=22)
    assert await repo.count_by_key() == {"k2": 1}
    row = await repo.get(rid)
    assert row is not None and (row.uniqueid, row.size) == ("1700.1", 22)
    audit_id = await repo.audit_started(
        at=4.0,
        action="decrypt",
        recording_id=rid,
        operator="ann",
        reason="complaint",
        detail={"to": "/tmp/x.wav"},
    )
    await repo.audit_outcome(audit_id, "ok")
    await repo.mark_purged(row, at=5.0, operator="retention", reason="expired")
    assert [a.action for a in await repo.audit(rid)] == ["decrypt", "purge"]
    assert await repo.live_paths() == set()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://h/db",
        "postgresql//host/db",
        "sqlite://relative",
        "postgresql://:x@/db",
        "postgresql://u:pw@host:notaport/db",
    ],
)
async def test_a_bad_url_is_a_config_error_naming_the_setting(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_database(url)
    assert "TRUSTLINE_DATABASE_URL" in str(caught.value)
    assert "pw" not in str(caught.value)


async def test_an_error_of_the_caller_rolls_back_and_passes_through(db: Database) -> None:
    with pytest.raises(OSError, match="disk full"):
        async with db.transaction():
            await db.execute("INSERT INTO alerts (at, kind, message) VALUES (1, 'k', 'x')")
            raise OSError("disk full")
    row = await db.fetchone("SELECT COUNT(*) FROM alerts")
    assert row is not None and row[0] == 0


async def test_question_marks_in_quoted_text_are_not_placeholders(db: Database) -> None:
    await db.execute(
        "INSERT INTO alerts (at, kind, message) VALUES (?, 'why?', ?) -- what? \n", (1.0, "ok?")
    )
    row = await db.fetchone("SELECT kind, message FROM alerts WHERE message = ?", ("ok?",))
    assert row is not None and (row["kind"], row[1]) == ("why?", "ok?")
