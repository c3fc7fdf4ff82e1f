"""Units given back to the store (agent/outbound/giveback.py): each exactly once, even when
the watch writing them is cancelled (at stop) while a write is on its way, and again after a
write that failed. The store answers when the test says so; nothing here sleeps.

What an operator sees: the store's count of a number's calls today. Given back twice, it
counts fewer calls than were made, and the number could pass its cap.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.outbound.giveback import GiveBacks
from agent.outbound.repo import OutboundRepo
from agent.store import Database, open_database

NUMBER, DAY = "+33142000001", "2026-11-17"


class GatedStore(OutboundRepo):
    """The real repo; each give-back is handed to the store at once (as aiosqlite hands a
    statement to its thread, or asyncpg to the server) and runs when the test opens the gate,
    whatever happens meanwhile to the coroutine that asked; the first may fail."""

    def __init__(self, db: Database, *, fail_first: bool = False) -> None:
        super().__init__(db)
        self.gate = asyncio.Event()
        self.at_gate = asyncio.Event()
        self.fail_first = fail_first
        self.written = 0
        self._running: set[asyncio.Task[None]] = set()

    async def give_back(self, number: str, day: str, units: int) -> None:
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def statement() -> None:
            await self.gate.wait()
            try:
                if self.fail_first:
                    self.fail_first = False
                    raise ConnectionError("the store went away")
                await OutboundRepo.give_back(self, number, day, units)
                self.written += 1
            except Exception as exc:
                if not answer.done():
                    answer.set_exception(exc)
            else:
                if not answer.done():
                    answer.set_result(None)

        task = asyncio.create_task(statement())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        self.at_gate.set()
        await answer


async def counted(db: Database) -> int:
    row = await db.fetchone("SELECT used FROM daily_usage WHERE number = ?", (NUMBER,))
    assert row is not None
    return int(row[0])


async def store_with_five_calls(tmp_path: Path, **kw: bool) -> tuple[Database, GatedStore]:
    db = await open_database(tmp_path / "store.db")
    store = GatedStore(db, **kw)
    await store.sync_numbers([(NUMBER, "reminders", True)])
    assert await store.grant_many([(NUMBER, DAY, 80, 5)]) == {NUMBER: (5, 5)}
    return db, store


async def test_a_give_back_on_its_way_when_the_watch_stops_is_written_once(
    tmp_path: Path,
) -> None:
    db, store = await store_with_five_calls(tmp_path)
    try:
        give_backs = GiveBacks(store)
        give_backs.add(NUMBER, DAY, 2)  # a lease of 2 units went idle
        watch = asyncio.create_task(give_backs.write_now())
        await store.at_gate.wait()
        watch.cancel()  # the agent stops: its watch is cancelled mid-write
        with pytest.raises(asyncio.CancelledError):
            await watch
        store.gate.set()
        await give_backs.write_now()  # the stop's own give-back: the write lands, once
        assert store.written == 1
        assert await counted(db) == 3
    finally:
        await db.close()


async def test_a_give_back_that_failed_is_written_by_the_next_watch(tmp_path: Path) -> None:
    db, store = await store_with_five_calls(tmp_path, fail_first=True)
    try:
        give_backs = GiveBacks(store)
        give_backs.add(NUMBER, DAY, 2)
        store.gate.set()
        with pytest.raises(ConnectionError):
            await give_backs.write_now()
        give_backs.add(NUMBER, DAY, 1)  # another idle unit meanwhile: both go back together
        await give_backs.write_now()
        assert store.written == 1
        assert await counted(db) == 2
    finally:
        await db.close()
