"""The SQLite store: migrations, transactions, and the atomic cap claim, on a real file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.outbound.repo import OutboundRepo
from agent.store import open_database
from agent.store.db import SqliteDatabase


async def test_migrations_apply_once_and_in_order(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
    names = [r[0] for r in await db.fetchall("SELECT name FROM schema_migrations ORDER BY version")]
    await db.close()
    assert names[0] == "0001_core.sql" and names == sorted(names)
    again = await open_database(tmp_path / "t.db")  # reopening applies nothing twice
    count = await again.fetchone("SELECT COUNT(*) FROM schema_migrations")
    await again.close()
    assert count is not None
    assert count[0] == len(names)


async def test_a_cancelled_transaction_leaves_the_store_usable(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
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
    async with db.transaction():  # would fail if the connection were left inside a transaction
        await db.execute("INSERT INTO alerts (at, kind, message) VALUES (2, 'k', 'whole')")
    rows = await db.fetchall("SELECT message FROM alerts")
    await db.close()
    assert [r[0] for r in rows] == ["whole"]


async def test_a_failed_statement_rolls_the_transaction_back(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
    with pytest.raises(StoreError):
        async with db.transaction():
            await db.execute("INSERT INTO alerts (at, kind, message) VALUES (1, 'k', 'x')")
            await db.execute("INSERT INTO no_such_table VALUES (1)")
    row = await db.fetchone("SELECT COUNT(*) FROM alerts")
    assert row is not None
    assert row[0] == 0
    await db.close()


async def test_claims_stop_exactly_at_the_cap_across_connections(tmp_path: Path) -> None:
    first = await open_database(tmp_path / "t.db")
    second = await open_database(tmp_path / "t.db")  # another agent process on the same file
    repos = [OutboundRepo(first), OutboundRepo(second)]
    results = await asyncio.gather(
        *(repos[i % 2].claim("+33142000001", "2026-11-17", 7) for i in range(20))
    )
    await first.close()
    await second.close()
    assert sorted(r for r in results if r is not None) == [1, 2, 3, 4, 5, 6, 7]
    assert results.count(None) == 13


async def test_a_claim_batch_names_each_number_once(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
    repo = OutboundRepo(db)
    counts = await repo.claim_many([("+1", "d", 1), ("+2", "d", 2)])
    assert counts == {"+1": 1, "+2": 1}
    assert await repo.claim_many([("+1", "d", 1), ("+2", "d", 2)]) == {"+2": 2}
    with pytest.raises(ValueError):
        await repo.claim_many([("+1", "d", 5), ("+1", "d", 5)])
    await db.close()


async def test_a_transaction_cancelled_while_waiting_for_the_lock_is_undone(tmp_path: Path) -> None:
    import sqlite3

    db = await open_database(tmp_path / "t.db")
    blocker = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def writer() -> None:
        async with db.transaction():
            await db.execute("INSERT INTO alerts (at, kind, message) VALUES (1, 'k', 'late')")

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.2)  # our BEGIN now waits in the database thread
    task.cancel()
    await asyncio.sleep(0.05)
    blocker.execute("ROLLBACK")  # the lock frees: the waiting BEGIN goes through in the thread
    blocker.close()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction():
        await db.execute("INSERT INTO alerts (at, kind, message) VALUES (2, 'k', 'next')")
    rows = await db.fetchall("SELECT message FROM alerts")
    await db.close()
    assert [r[0] for r in rows] == ["next"]


async def test_migration_masks_spam_reports_of_numbers_not_ours(tmp_path: Path) -> None:
    import sqlite3

    from agent.store.db import _migrations

    # A store as it was before 0007: a stranger's number in clear, and one of ours.
    db = await open_database(tmp_path / "t.db", migrate=False)
    await db.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    for version, name, sql in _migrations():
        if version >= 7:
            break
        conn = sqlite3.connect(tmp_path / "t.db")
        conn.executescript(sql)
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name))
        conn.commit()
        conn.close()
    await db.execute(
        "INSERT INTO spam_reports (number, reported_at, day, source, ours)"
        " VALUES ('+12125550100', 1, '2026-11-17', 'ivr', 0),"
        " ('+33142000001', 1, '2026-11-17', 'ivr', 1)"
    )
    await db.close()
    db = await open_database(tmp_path / "t.db")
    rows = await db.fetchall("SELECT number, ours FROM spam_reports ORDER BY id")
    await db.close()
    assert [tuple(r) for r in rows] == [("***0100", 0), ("+33142000001", 1)]


async def test_checkpoints_run_on_their_own_connection_not_inside_writes(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
    try:
        assert isinstance(db, SqliteDatabase)  # the WAL checkpoint is SQLite's
        await db.start_checkpoints(interval=3600)  # the timer never fires during this test
        for i in range(600):  # 4 KiB rows: past the 1,000-page auto-checkpoint of a default store
            await db.execute(
                "INSERT INTO alerts (at, kind, message) VALUES (?, 'k', ?)", (i, "x" * 4000)
            )
        # No commit copied the WAL back: writes only append while the checkpointer is in charge
        # (SQLite's default would have copied it back and restarted it past 1,000 frames).
        frames, copied = await db.reads.checkpoint()
        assert frames > 1000 and copied == frames
        # Background reads see every committed write, on their own connection.
        row = await db.reads.fetchone("SELECT COUNT(*) FROM alerts")
        assert row is not None
        assert row[0] == 600
        with pytest.raises(StoreError):
            await db.reads.execute("DELETE FROM alerts")  # the reads connection cannot write
    finally:
        await db.close()


async def test_a_rest_decided_twice_is_stored_once(tmp_path: Path) -> None:
    # Two agents may both see a number reach its intensive threshold (units come in grants).
    db = await open_database(tmp_path / "t.db")
    repo = OutboundRepo(db)
    try:
        await repo.add_rest("+33142000001", 100.0, 200.0, "intensive_days")
        await repo.add_rest("+33142000001", 100.0, 200.0, "intensive_days")
        await repo.add_rest("+33142000002", 100.0, 200.0, "intensive_days")
        assert len(await repo.rests_after(0.0)) == 2
    finally:
        await db.close()


async def test_grants_take_what_is_left_and_say_how_much(tmp_path: Path) -> None:
    first = await open_database(tmp_path / "t.db")
    second = await open_database(tmp_path / "t.db")  # another agent
    try:
        a, b = OutboundRepo(first), OutboundRepo(second)
        assert await a.grant_many([("+1", "d", 10, 4), ("+2", "d", 3, 5)]) == {
            "+1": (4, 4),
            "+2": (3, 3),
        }
        assert await b.grant_many([("+1", "d", 10, 5), ("+2", "d", 3, 1)]) == {"+1": (9, 5)}
        assert await a.grant_many([("+1", "d", 10, 5)]) == {"+1": (10, 1)}
        await b.give_back("+1", "d", 2)  # units no call used
        assert await a.claim("+1", "d", 10) == 9
    finally:
        await first.close()
        await second.close()
