"""The callback set: exact answers over a real SQLite store, in memory that does not grow."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

from agent.screening.callees import RecentCallees
from agent.screening.repo import ScreeningRepo
from agent.store import Database, open_database

DAY = 86400.0
NOW = 1_800_000_000.0


def h(n: int) -> str:
    return hashlib.sha256(f"callee {n}".encode()).hexdigest()


async def add_calls(db: Database, first: int, count: int, at: float) -> None:
    await db.executemany(
        "INSERT INTO call_audit (at, purpose, status, reason, callee_hash)"
        " VALUES (?, 'reminder', 'ok', 'test', ?)",
        ((at + i * 0.001, h(n)) for i, n in enumerate(range(first, first + count))),
    )


async def test_answers_stay_exact_when_many_callees_share_a_slot(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "store.sqlite3")
    try:
        # 16 slots for 400 callees: every slot is "maybe", so the store decides each answer.
        callees = RecentCallees(ScreeningRepo(db), slots=16)
        await add_calls(db, 0, 200, NOW - 20 * DAY)  # too old for a 14-day window
        await add_calls(db, 200, 200, NOW - 3 * DAY)
        since = NOW - 14 * DAY
        assert [await callees.called_since(h(n), since, NOW) for n in (0, 199, 200, 399)] == [
            False,
            False,
            True,
            True,
        ]
        assert not await callees.called_since(h(10_000), since, NOW)  # never called
        # A call made just now is seen after a quiet spell; the window slides on.
        await add_calls(db, 10_000, 1, NOW + 10)
        assert await callees.called_since(h(10_000), since + 11, NOW + 11)
        later = NOW + 12 * DAY
        assert not await callees.called_since(h(200), later - 14 * DAY, later)
        assert await callees.called_since(h(10_000), later - 14 * DAY, later)
        await callees.close()
    finally:
        await db.close()


async def test_memory_does_not_grow_with_the_number_of_calls(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "store.sqlite3")
    try:
        tracemalloc.start()
        callees = RecentCallees(ScreeningRepo(db))
        await add_calls(db, 0, 10_000, NOW - DAY)
        assert await callees.called_since(h(5), NOW - 14 * DAY, NOW)
        small = tracemalloc.get_traced_memory()[0]
        await add_calls(db, 10_000, 100_000, NOW - DAY / 2)
        # After a quiet spell the next call folds the 100,000 new calls in.
        assert await callees.called_since(h(100_000), NOW - 14 * DAY, NOW + 6)
        assert not await callees.called_since(h(200_000), NOW - 14 * DAY, NOW + 6)
        large = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        # A copy keyed by callee grew ~15 MB here; the table stays the same size.
        assert large - small < 1_000_000, (small, large)
        assert len(callees) == 110_000
        await callees.close()
    finally:
        await db.close()
