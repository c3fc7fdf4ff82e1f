"""The Database API and its SQLite implementation (aiosqlite, WAL, one writer connection).

One connection serialises every statement through aiosqlite's worker thread, so the store
never races with itself inside one agent; other processes (the CLI, a second agent) are
serialised by SQLite's own locking (busy timeout, BEGIN IMMEDIATE for read-modify-write).

Work that must not queue behind the call path's writes has its own connection: ``reads`` (a
read-only connection for background reads: state polling, reloads) and the WAL checkpoint,
which ``start_checkpoints`` runs on that connection on a timer instead of inside whichever
commit crosses SQLite's threshold. The interface (execute, fetchone, fetchall, transaction,
reads) is what a PostgreSQL backend implements too; its ``reads`` may be itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from agent.errors import StoreError
from agent.store.base import WHOLE_STORE, migrations, refuse_newer
from agent.store.base import Database as Database  # the interface this module implements
from agent.tasks import stop_task

log = logging.getLogger(__name__)

Row = sqlite3.Row
# The task holding the transaction, so its own statements do not wait on the lock. A task
# compares itself, because tasks created inside a transaction inherit the context.
_IN_TX: ContextVar[object] = ContextVar("trustline_in_tx", default=None)


def _holds_tx() -> bool:
    current = asyncio.current_task()
    return current is not None and _IN_TX.get() is current


Params = Sequence[Any]


class SqliteDatabase(Database):
    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self.description = str(path)
        self._tx_lock = asyncio.Lock()
        self._reads: SqliteDatabase | None = None
        self._checkpoints: asyncio.Task[None] | None = None

    @property
    def reads(self) -> SqliteDatabase:
        """The store for background reads, on a connection of its own (itself if none)."""
        return self._reads or self

    async def open_reads(self) -> None:
        """Open the read-only connection ``reads`` uses."""
        if self._reads is None:
            conn = await _connect(self.path)
            await conn.execute("PRAGMA query_only=ON")
            self._reads = SqliteDatabase(conn, self.path)

    async def start_checkpoints(self, interval: float = 1.0) -> None:
        """Checkpoint the WAL every ``interval`` seconds on the reads connection (PASSIVE:
        never waits for writers, never makes them wait), and no longer inside commits."""
        await self.open_reads()
        await self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpoints = asyncio.create_task(self._checkpoint_loop(interval), name="wal")

    async def _checkpoint_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reads.checkpoint()
            except StoreError:
                log.warning("store: WAL checkpoint failed; will retry", exc_info=True)

    async def checkpoint(self) -> tuple[int, int]:
        """One PASSIVE checkpoint: (frames in the WAL, frames copied back)."""
        try:
            rows = await self._conn.execute_fetchall("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StoreError(f"store checkpoint failed: {exc}") from exc
        row = next(iter(rows), None)
        return (int(row[1]), int(row[2])) if row else (0, 0)

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (its own transaction unless inside ``transaction()``)."""
        async with self._outside_tx():
            try:
                cur = await self._conn.execute(sql, params)
                count = cur.rowcount
                await cur.close()
                return count
            except sqlite3.Error as exc:
                raise StoreError(f"store statement failed: {exc}") from exc

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        async with self._outside_tx():
            try:
                # One hop to the database thread: execute, fetch and finalise together.
                rows = await self._conn.execute_fetchall(sql, params)
                return next(iter(rows), None)
            except sqlite3.Error as exc:
                raise StoreError(f"store query failed: {exc}") from exc

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._outside_tx():
            try:
                return list(await self._conn.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise StoreError(f"store query failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _outside_tx(self) -> AsyncIterator[None]:
        # A statement from another task must not land inside someone's open transaction.
        if _holds_tx():
            yield
            return
        async with self._tx_lock:
            yield

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Many rows in one transaction."""
        async with self.transaction():
            try:
                await self._conn.executemany(sql, list(rows))
            except sqlite3.Error as exc:
                raise StoreError(f"store statement failed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self, lock: str | None = WHOLE_STORE) -> AsyncIterator[Database]:
        """BEGIN IMMEDIATE ... COMMIT: statements inside see and write a consistent state.

        Only one coroutine may hold a transaction at a time on the shared connection; callers
        serialise through ``self._tx_lock``. SQLite has one writer at a time: every
        transaction is serialised, whatever ``lock`` it names.
        """
        if _holds_tx():
            yield self  # nested: part of the outer transaction
            return
        async with self._tx_lock:
            token = _IN_TX.set(asyncio.current_task())
            try:
                try:
                    await self._conn.execute("BEGIN IMMEDIATE")
                    yield self
                    await self._conn.execute("COMMIT")
                except BaseException:
                    # Whatever failed or was cancelled (even BEGIN or COMMIT, which still run in
                    # the database thread), undo it there: statements run in order, so this
                    # ROLLBACK comes after them and the shared connection never stays inside
                    # a transaction. "No transaction is active" is expected and ignored.
                    with contextlib.suppress(sqlite3.Error):
                        await asyncio.shield(self._conn.execute("ROLLBACK"))
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"store transaction failed: {exc}") from exc
            finally:
                _IN_TX.reset(token)

    async def release_memory(self) -> None:
        """Empty this connection's page cache (and the reads connection's): after start-up
        read every number, SQLite would keep those pages for nothing."""
        for db in (self, self._reads):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    await db._conn.execute("PRAGMA shrink_memory")

    async def close(self) -> None:
        if self._checkpoints is not None:
            await stop_task(self._checkpoints)
            self._checkpoints = None
            # What is left in the WAL goes back now, so the file stands alone after a stop.
            with contextlib.suppress(sqlite3.Error):
                await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._reads is not None:
            await self._reads.close()
            self._reads = None
        await self._conn.close()


async def _connect(path: Path) -> aiosqlite.Connection:
    try:
        conn = await aiosqlite.connect(path, isolation_level=None, timeout=10.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a process crash; only power loss may drop the tail.
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=10000")
    return conn


async def open_database(path: Path, *, migrate: bool = True) -> SqliteDatabase:
    """Open (creating if needed) the SQLite store at ``path`` and apply pending migrations."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the same mode.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    db = SqliteDatabase(await _connect(path), path)
    if migrate:
        try:
            await apply_migrations(db)
        except BaseException:
            await db.close()  # e.g. a database newer than this agent: leave no thread behind
            raise
    return db


def _migrations() -> list[tuple[int, str, str]]:
    folder = resources.files("agent.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(db: Database) -> list[str]:
    """Apply every numbered migration not yet applied, each in one transaction."""
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    done = {row[0] for row in await db.fetchall("SELECT version FROM schema_migrations")}
    refuse_newer(done, (m.version for m in migrations("sqlite")), db.description)
    applied = []
    for version, name, sql in _migrations():
        if version in done:
            continue
        async with db.transaction():
            # Another process starting at the same moment may have applied it meanwhile.
            if await db.fetchone("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)):
                continue
            for statement in _split_sql(sql):
                await db.execute(statement)
            await db.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (version, name)
            )
        log.info("store: applied migration %s", name)
        applied.append(name)
    return applied


def _split_sql(script: str) -> list[str]:
    """The statements of a migration file, split where SQLite says a statement is complete."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise StoreError("migration ends with an incomplete statement")
    return statements
