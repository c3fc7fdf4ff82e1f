"""A fresh PostgreSQL schema per test, on the machine's server (TRUSTLINE_TEST_PG_URL,
default postgresql://postgres@127.0.0.1:5432/test).

When CI=true and the server cannot be reached, the PostgreSQL tests fail; elsewhere they skip
and say why.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from agent.store import Database, open_database

SERVER = os.environ.get("TRUSTLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(SERVER, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        why = f"PostgreSQL at {SERVER} cannot be reached: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def url_for(schema: str) -> str:
    sep = "&" if "?" in SERVER else "?"
    return f"{SERVER}{sep}search_path={schema}"


async def fresh_schema() -> AsyncIterator[str]:
    """Yield the URL of a new empty schema; drop it afterwards."""
    admin = await _admin()
    schema = f"tl_test_{secrets.token_hex(6)}"
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield url_for(schema)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


# The contract fixtures: every test that takes `db` runs on SQLite and on PostgreSQL.
@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trustline.sqlite3'}"
        return
    async for url in fresh_schema():
        yield url


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = await open_database(store_url)
    yield database
    await database.close()
