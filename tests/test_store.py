"""The SQLite store: migrations, transactions, and the atomic cap claim, on a real file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.errors import StoreError
from agent.outbound.repo import OutboundRepo
from agent.store import open_database


async def test_migrations_apply_once_and_in_order(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "t.db")
    names = [r[0] for r in await db.fetchall("SELECT name FROM schema_migrations ORDER BY version")]
    await db.close()
    assert names[0] == "0001_core.sql" and names == sorted(names)
    again = await open_database(tmp_path / "t.db")  # reopening applies nothing twice
    count = await again.fetchone("SELECT COUNT(*) FROM schema_migrations")
    await again.close()
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
    assert (await db.fetchone("SELECT COUNT(*) FROM alerts"))[0] == 0
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
