"""The Database API on PostgreSQL (asyncpg), for several agents sharing one database.

May: hold a connection pool, translate ``?`` placeholders to ``$n``, map driver errors to
StoreError, apply the PostgreSQL migrations under an advisory lock, reconnect with backoff when
the server is not there at start. Must not: hold policy, or log a URL with its password.

Statements outside a transaction take any pooled connection, so claims from many calls run in
parallel (each claim is one atomic statement; the call path takes no transaction).
``transaction(lock)`` pins one connection to the task through a ContextVar and first takes a
transaction-scoped advisory lock named by ``lock``, so transactions naming the same lock
serialise across every agent on the database, as SQLite's ``BEGIN IMMEDIATE`` does; the default,
``WHOLE_STORE``, is the one key every agent version takes. ``lock=None`` takes none: for
transactions made of atomic, conditional statements (an alert's upsert and its outbox row),
which then wait only for the rows they write, never for another agent's unrelated work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextvars import ContextVar
from typing import Any

import asyncpg

from agent.errors import StoreError
from agent.store.base import (
    WHOLE_STORE,
    Database,
    Params,
    Row,
    SchemaTooNew,
    migrations,
    redact,
    refuse_newer,
)

log = logging.getLogger(__name__)

# Advisory lock keys (first int4): "tl" + purpose. The second key is the schema's hash, so
# agents on different schemas of one database (tests, staging) never wait for each other.
_MIGRATE_LOCK = 0x746C_6D67
_TX_LOCK = 0x746C_7478
_SCHEMA_KEY = "hashtext(current_schema())"

# What a driver or socket can raise for a statement; CancelledError is never caught.
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def translate(sql: str) -> str:
    """``?`` placeholders to ``$1, $2, ...``, leaving quoted text and comments alone."""
    out: list[str] = []
    n = 0
    i = 0
    quote = ""
    while i < len(sql):
        ch = sql[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "-" and sql.startswith("--", i):
            end = sql.find("\n", i)
            end = len(sql) if end < 0 else end
            out.append(sql[i:end])
            i = end
            continue
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresDatabase(Database):
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        statement_timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self.description = redact(url)
        self._pool_size = pool_size
        self._statement_timeout = statement_timeout
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._problem = "not connected yet"
        self._sql: dict[str, str] = {}
        # (task, connection) of the transaction the current task holds; per object, so two
        # Database objects in one process (two agents in a test) never share a connection.
        self._held: ContextVar[tuple[object, Any] | None] = ContextVar("pg_tx", default=None)
        self._reconnect: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    # -- life cycle ------------------------------------------------------------------------
    async def connect(self, *, migrate: bool = True) -> None:
        """Open the pool and bring the schema up to date; StoreError when that fails."""
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout,
                command_timeout=self._statement_timeout + 1.0,
                statement_cache_size=512,
                reset=_keep_session,
                server_settings={
                    "statement_timeout": str(int(self._statement_timeout * 1000)),
                    "application_name": "trustline",
                },
            )
        except (*_FAILURES, ValueError) as exc:
            self._problem = f"cannot connect to {self.description}: {_reason(exc)}"
            raise StoreError(self._problem) from None
        try:
            if migrate:
                await apply_migrations(pool, self.description)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._problem = ""
        self.connected.set()
        log.info("store: connected to %s", self.description)

    def connect_in_background(self, *, initial: float = 0.5, maximum: float = 5.0) -> None:
        """Keep trying ``connect`` with exponential backoff until it succeeds; meanwhile every
        statement fails at once with a StoreError that says why (callers fall back)."""

        async def attempts() -> None:
            delay = initial
            while True:
                try:
                    await self.connect()
                    return
                except StoreError as exc:
                    log.warning("store: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(maximum, delay * 2)

        self._reconnect = asyncio.create_task(attempts(), name="pg-connect")

    def status(self) -> tuple[bool, str]:
        """(connected, detail) for /readyz."""
        if self._pool is None:
            return False, self._problem or "not connected"
        return True, self.description

    @property
    def reads(self) -> PostgresDatabase:
        """The pool serves background reads on connections of their own already."""
        return self

    async def start_checkpoints(self, interval: float = 1.0) -> None:
        """PostgreSQL checkpoints by itself: nothing to schedule."""

    async def close(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._pool is not None:
            with contextlib.suppress(*_FAILURES):
                await asyncio.wait_for(self._pool.close(), 10.0)
            self._pool = None

    # -- statements ------------------------------------------------------------------------
    def _text(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            if len(self._sql) > 4096:  # statements built per batch size stay few; stay bounded
                self._sql.clear()
            text = self._sql[sql] = translate(sql)
        return text

    def _mine(self) -> Any:
        held = self._held.get()
        # Tasks created inside a transaction inherit the context: compare the task itself.
        if held is not None and held[0] is asyncio.current_task():
            return held[1]
        return None

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        conn = self._mine()
        if conn is not None:
            yield conn
            return
        pool = self._pool
        if pool is None:
            raise StoreError(f"store unavailable: {self._problem}")
        async with pool.acquire(timeout=self._statement_timeout) as conn:
            yield conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        text = self._text(sql)
        try:
            async with self._connection() as conn:
                return _rowcount(await conn.execute(text, *params))
        except _FAILURES as exc:
            raise StoreError(f"store statement failed: {_reason(exc)}") from exc

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        text = self._text(sql)
        try:
            async with self._connection() as conn:
                row: Row | None = await conn.fetchrow(text, *params)
                return row
        except _FAILURES as exc:
            raise StoreError(f"store query failed: {_reason(exc)}") from exc

    async def fetchall(self, sql: str, params: Params = ()) -> Sequence[Row]:
        text = self._text(sql)
        try:
            async with self._connection() as conn:
                rows: list[Row] = await conn.fetch(text, *params)
                return rows
        except _FAILURES as exc:
            raise StoreError(f"store query failed: {_reason(exc)}") from exc

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Many rows in one transaction (asyncpg's executemany is atomic)."""
        text = self._text(sql)
        batch = [tuple(r) for r in rows]
        if not batch:
            return
        try:
            async with self._connection() as conn:
                await conn.executemany(text, batch)
        except _FAILURES as exc:
            raise StoreError(f"store statement failed: {_reason(exc)}") from exc

    @contextlib.asynccontextmanager
    async def transaction(self, lock: str | None = WHOLE_STORE) -> AsyncIterator[Database]:
        held = self._mine()
        if held is not None:
            # Nested: part of the outer transaction, which also takes this one's lock (held
            # until the outer one ends; advisory locks are re-entrant).
            await self._lock(held, lock)
            yield self
            return
        pool = self._pool
        if pool is None:
            raise StoreError(f"store unavailable: {self._problem}")
        in_body = False
        try:
            async with pool.acquire(timeout=self._statement_timeout) as conn:
                tx = conn.transaction()
                await tx.start()
                token = self._held.set((asyncio.current_task(), conn))
                try:
                    await self._lock(conn, lock)
                    in_body = True
                    yield self
                    in_body = False
                except BaseException:
                    # Whatever failed or was cancelled; releasing a connection inside a
                    # transaction also rolls back, this just does it first and in order.
                    with contextlib.suppress(*_FAILURES):
                        await asyncio.shield(tx.rollback())
                    raise
                else:
                    await tx.commit()
                finally:
                    self._held.reset(token)
        except _FAILURES as exc:
            if in_body:
                raise  # the caller's own error (a file, a socket), not the store's
            raise StoreError(f"store transaction failed: {_reason(exc)}") from exc

    async def _lock(self, conn: Any, lock: str | None) -> None:
        """Take ``lock`` until the transaction ends; the second key is the schema's."""
        try:
            if lock == WHOLE_STORE:
                await conn.execute(f"SELECT pg_advisory_xact_lock({_TX_LOCK}, {_SCHEMA_KEY})")
            elif lock is not None:
                await conn.execute(
                    f"SELECT pg_advisory_xact_lock(hashtext('tl:' || $1::text), {_SCHEMA_KEY})",
                    lock,
                )
        except _FAILURES as exc:
            raise StoreError(f"store transaction failed: {_reason(exc)}") from exc


async def _keep_session(_conn: Any) -> None:
    """Release without asyncpg's reset query (one round trip per statement saved): our
    statements leave no session state behind (no SET, LISTEN, cursors; the one session-level
    lock, in migrations, is released there). An open transaction is still rolled back."""


def _reason(exc: BaseException) -> str:
    # asyncpg messages never carry the password; the URL is only ever shown redacted.
    return str(exc) or type(exc).__name__


async def apply_migrations(pool: Any, where: str) -> list[str]:
    """Apply pending PostgreSQL migrations, each in one transaction, holding a session-level
    advisory lock so agents starting together apply each migration exactly once."""
    known = migrations("postgres")
    applied: list[str] = []
    try:
        async with pool.acquire() as conn:
            await conn.execute(f"SELECT pg_advisory_lock({_MIGRATE_LOCK}, {_SCHEMA_KEY})")
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                refuse_newer(done, (m.version for m in known), where)
                for m in known:
                    if m.version in done:
                        continue
                    async with conn.transaction():
                        await conn.execute(m.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            m.version,
                            m.name,
                        )
                    log.info("store: applied migration postgres/%s", m.name)
                    applied.append(m.name)
            finally:
                await conn.execute(f"SELECT pg_advisory_unlock({_MIGRATE_LOCK}, {_SCHEMA_KEY})")
    except _FAILURES as exc:
        raise StoreError(f"migrating {where} failed: {_reason(exc)}") from exc
    return applied


async def open_postgres(
    url: str, *, pool_size: int = 10, migrate: bool = True, wait: bool = True
) -> PostgresDatabase:
    """Connect (and migrate). ``wait=False``: return at once and keep connecting in the
    background when the server is not reachable (the agent starts and serves fallbacks)."""
    db = PostgresDatabase(url, pool_size=pool_size)
    if wait:
        await db.connect(migrate=migrate)
        return db
    try:
        await db.connect(migrate=migrate)
    except SchemaTooNew:
        raise
    except StoreError as exc:
        log.error("store: %s; starting without it and retrying", exc)
        db.connect_in_background()
    return db
