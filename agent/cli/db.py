"""Sub-commands: db migrate, db copy (move an installation from one store to another).

``db copy`` copies every table of the source (SQLite or PostgreSQL) into an empty, migrated
target, in one target transaction, then checks the row counts of both sides. URLs are only
ever printed redacted.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from agent.errors import BadRequest, StoreError
from agent.store import Database, open_database, redact
from agent.store.base import parse_url

if TYPE_CHECKING:  # the settings model loads pydantic: not on the --help path
    from agent.settings import Settings

_CHUNK = 1000
# Rows the migrations insert themselves (one-row state tables): replaced by the source's.
_SEEDED = frozenset({"state_version", "screening_state"})


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from agent.cli import common_options

    p = sub.add_parser("db", help="database: migrate, copy to another backend")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    m = db_sub.add_parser(
        "migrate", parents=[common_options()], help="apply pending migrations and list them"
    )
    m.add_argument("--url", help="database URL (default: TRUSTLINE_DATABASE_URL)")
    m.set_defaults(handler=_migrate)
    c = db_sub.add_parser(
        "copy",
        parents=[common_options()],
        help="copy every table into an empty database, then compare row counts",
    )
    c.add_argument("--from", dest="source", required=True, help="e.g. sqlite:///path/x.sqlite3")
    c.add_argument("--to", dest="target", required=True, help="e.g. postgresql://u@host/db")
    c.set_defaults(handler=_copy)


async def _versions(db: Database) -> list[int]:
    return [int(r[0]) for r in await db.fetchall("SELECT version FROM schema_migrations")]


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or settings.database
    db = await open_database(url, migrate=False)
    try:
        before = set(await _versions(db)) if await _has_migrations_table(db, url) else set()
    finally:
        await db.close()
    db = await open_database(url)  # applies what is pending (under the advisory lock on PG)
    try:
        after = await _versions(db)
    finally:
        await db.close()
    new = sorted(set(after) - before)
    print(f"{redact(url)}: schema version {max(after, default=0)}", end="")
    print(f", applied {', '.join(f'{v:04d}' for v in new)}" if new else ", up to date")
    return 0


async def _has_migrations_table(db: Database, url: str) -> bool:
    return "schema_migrations" in await _tables(db, url)


async def _tables(db: Database, url: str) -> list[str]:
    """User tables in creation order (so a referenced table comes before its referrers)."""
    if parse_url(url)[0] == "sqlite":
        rows = await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY rowid"
        )
    else:
        rows = await db.fetchall(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r'"
            " AND c.relnamespace = current_schema()::regnamespace ORDER BY c.oid"
        )
    return [str(r[0]) for r in rows]


async def _columns(db: Database, table: str) -> list[str]:
    row = await db.fetchone(f"SELECT * FROM {table} LIMIT 1")
    if row is None:
        return []
    return list(row.keys())


async def _copy(args: argparse.Namespace, settings: Settings) -> int:
    if args.source == args.target:
        raise BadRequest("db copy: --from and --to name the same database")
    source = await open_database(args.source)
    try:
        target = await open_database(args.target)
        try:
            return await _copy_between(source, args.source, target, args.target)
        finally:
            await target.close()
    finally:
        await source.close()


async def _copy_between(source: Database, source_url: str, target: Database, url: str) -> int:
    if sorted(await _versions(source)) != sorted(await _versions(target)):
        raise StoreError("db copy: source and target are at different schema versions")
    tables = [t for t in await _tables(source, source_url) if t != "schema_migrations"]
    missing = set(tables) - set(await _tables(target, url))
    if missing:
        raise StoreError(f"db copy: the target has no table {', '.join(sorted(missing))}")
    counts = await _counts(source, tables)
    total = sum(counts.values())
    print(f"copying {total} rows in {len(tables)} tables: {redact(source_url)} -> {redact(url)}")
    done = 0
    started = time.monotonic()
    async with target.transaction() as tx:
        for table in tables:
            done = await _copy_table(source, tx, table, parse_url(url)[0], done, total)
    print(file=sys.stdout)
    found = await _counts(target, tables)
    wrong = [
        f"{table}: {counts[table]} in the source, {found[table]} in the target"
        for table in tables
        if found[table] != counts[table]
    ]
    if wrong:
        raise StoreError("db copy: row counts differ: " + "; ".join(wrong))
    print(
        f"copied {total} rows in {time.monotonic() - started:.1f} s;"
        f" row counts match in all {len(tables)} tables"
    )
    return 0


async def _counts(db: Database, tables: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table in tables:
        row = await db.fetchone(f"SELECT COUNT(*) FROM {table}")
        counts[table] = int(row[0]) if row else 0
    return counts


async def _copy_table(
    source: Database, tx: Database, table: str, backend: str, done: int, total: int
) -> int:
    """Copy one table in chunks inside the target's transaction; the rows copied so far."""
    if table in _SEEDED:
        await tx.execute(f"DELETE FROM {table}")
    row = await tx.fetchone(f"SELECT COUNT(*) FROM {table}")
    if row is not None and int(row[0]):
        raise BadRequest(f"db copy: the target's table {table} is not empty")
    columns = await _columns(source, table)
    if not columns:
        return done
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    offset = 0
    while True:
        rows = await source.fetchall(
            f"SELECT {names} FROM {table} ORDER BY {columns[0]} LIMIT ? OFFSET ?",
            (_CHUNK, offset),
        )
        if not rows:
            break
        await tx.executemany(
            f"INSERT INTO {table} ({names}) VALUES ({marks})", [tuple(r) for r in rows]
        )
        offset += len(rows)
        done += len(rows)
        _progress(done, total, table)
    if "id" in columns and backend == "postgresql":
        # Identity columns continue after the copied ids.
        await tx.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" (SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
            f" WHERE pg_get_serial_sequence('{table}', 'id') IS NOT NULL"
        )
    return done


def _progress(done: int, total: int, table: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total} rows ({table})", end="", flush=True)
