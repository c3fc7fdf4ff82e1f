"""Storage: one Database interface (``base.py``), SQLite (``db.py``, the embedded default) and
PostgreSQL (``postgres.py``, several agents on one database) behind it, chosen by URL.

Feature modules keep their SQL in their own repository classes (agent/outbound/repo.py, ...)
and talk to the database only through ``Database``. Placeholders are ``?`` everywhere, and the
SQL is portable: what only one backend understands lives in that backend's module or in its
migrations (``migrations/*.sql`` for SQLite, ``migrations/postgres/*.sql``, same numbers).
"""

from __future__ import annotations

from pathlib import Path

from agent.store.base import Database, Row, SchemaTooNew, parse_url, redact

__all__ = ["Database", "Row", "SchemaTooNew", "open_database", "redact"]


async def open_database(
    target: str | Path, *, migrate: bool = True, pool_size: int = 10, wait: bool = True
) -> Database:
    """Open the store named by ``target`` (a URL, or a SQLite file path) and migrate it.

    ``wait=False`` (the agent at start): a PostgreSQL server that cannot be reached yet does
    not stop the caller; the database keeps connecting in the background and every statement
    fails with a StoreError until it does. A bad URL raises ConfigError naming the setting.
    """
    from agent.store import db, postgres  # here: each backend loads its driver only when used

    if isinstance(target, Path):
        return await db.open_database(target, migrate=migrate)
    backend, path = parse_url(target)
    if backend == "sqlite":
        assert path is not None
        return await db.open_database(path, migrate=migrate)
    return await postgres.open_postgres(target, pool_size=pool_size, migrate=migrate, wait=wait)
