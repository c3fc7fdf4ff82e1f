"""trustline db migrate / db copy, end to end through the command: a populated SQLite store
moves to PostgreSQL and the admin commands print the same on both."""

from __future__ import annotations

import time
from pathlib import Path

from agent.datadir import load_hash_key
from agent.outbound.policy import local_day
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.outcomes.calls import CallEnded
from agent.outcomes.repo import OutcomeRepo
from agent.store import open_database
from tests.conftest import PARIS, POOLS, write_config
from tests.postgres_schema import fresh_schema
from tests.test_cli import trustline


async def _populate(sqlite_path: Path) -> None:
    now = time.time()
    today = local_day(now, PARIS).isoformat()
    load_hash_key(sqlite_path.parent / "callee-hash.key")  # as the agent's first start does
    db = await open_database(sqlite_path)
    repo = OutboundRepo(db)
    for _ in range(3):
        assert await repo.claim("+33142000001", today, 80) is not None
    records = [
        AuditRecord(
            now - i,
            f"1700.{i}",
            "reminder",
            "reminders",
            "+33142000001",
            "ok",
            "x",
            "ab" * 32,
            None,
        )
        for i in range(3)
    ]
    await repo.write_audit(records, {"+33142000001": now})
    outcomes = OutcomeRepo(db)
    for i, outcome in enumerate(["answered", "busy", "no_answer"]):
        await outcomes.record_end(CallEnded(f"1700.{i}", "", outcome, None, 16, 20, now))
    await repo.add_rest("+33472000003", now - 60, now + 3600, "intensive")
    await repo.bump_state_version()
    await db.close()


async def test_copy_a_sqlite_store_to_postgres_and_read_the_same(tmp_path: Path) -> None:
    config = write_config(tmp_path / "pools.toml", POOLS)
    base = {"TRUSTLINE_CONFIG": str(config), "TRUSTLINE_DATA_DIR": str(tmp_path / "data")}
    sqlite_url = f"sqlite:///{tmp_path / 'data' / 'trustline.sqlite3'}"
    await _populate(tmp_path / "data" / "trustline.sqlite3")  # the agent's store, with traffic
    assert (await trustline("numbers", env=base)).returncode == 0  # syncs the pools into it
    for _ in range(2):
        assert (await trustline("report-spam", "+33142000002", env=base)).returncode == 0

    async for pg_url in fresh_schema():
        pg = {**base, "TRUSTLINE_DATABASE_URL": pg_url}
        copied = await trustline("db", "copy", "--from", sqlite_url, "--to", pg_url, env=base)
        assert copied.returncode == 0, copied.stderr
        assert "row counts match in all" in copied.stdout
        assert "rows (" in copied.stdout  # the progress line

        for command in (["numbers"], ["stats", "--days", "2"], ["stats", "--by-number"]):
            on_sqlite = await trustline(*command, env=base)
            on_pg = await trustline(*command, env=pg)
            assert on_pg.returncode == 0, on_pg.stderr
            assert on_pg.stdout == on_sqlite.stdout
        table = (await trustline("numbers", env=pg)).stdout
        assert "quarantined" in table and "3/80" in table and "rest" in table

        # Ids continue after the copied ones: a new report lands on PostgreSQL.
        third = await trustline("report-spam", "+33142000002", env=pg)
        assert third.returncode == 0, third.stderr
        assert "3 report(s) today" in third.stdout

        again = await trustline("db", "copy", "--from", sqlite_url, "--to", pg_url, env=base)
        assert again.returncode == 64 and "is not empty" in again.stderr

        migrated = await trustline("db", "migrate", env=pg)
        assert migrated.returncode == 0, migrated.stderr
        assert "up to date" in migrated.stdout and "search_path" in migrated.stdout


async def test_db_migrate_creates_a_new_store(tmp_path: Path) -> None:
    env = {"TRUSTLINE_DATA_DIR": str(tmp_path / "data")}
    done = await trustline("db", "migrate", env=env)
    assert done.returncode == 0, done.stderr
    assert "applied 0001, 0002" in done.stdout


async def test_a_bad_database_url_stops_every_command_with_exit_78(tmp_path: Path) -> None:
    env = {
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_DATABASE_URL": "mysql://admin:hunter2@db/trustline",
    }
    for command in (["numbers"], ["db", "migrate"], ["stats"]):
        done = await trustline(*command, env=env)
        assert done.returncode == 78
        assert "TRUSTLINE_DATABASE_URL" in done.stderr and "hunter2" not in done.stderr


async def test_postgres_unreachable_is_a_store_error_for_admin_commands(tmp_path: Path) -> None:
    env = {
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/trustline",
    }
    done = await trustline("numbers", env=env)
    assert done.returncode == 74
    assert "cannot connect to postgresql://u:***@127.0.0.1:9/trustline" in done.stderr
    assert "hunter2" not in done.stderr
