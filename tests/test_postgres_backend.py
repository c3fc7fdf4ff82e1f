"""PostgreSQL-only behaviour of the store: statement timeout, placeholders, redacted URLs."""

from __future__ import annotations

import pytest

from agent.errors import StoreError
from agent.store import redact
from agent.store.postgres import PostgresDatabase, translate
from tests.postgres_schema import fresh_schema


async def test_a_statement_past_the_timeout_fails_as_a_store_error() -> None:
    async for url in fresh_schema():
        db = PostgresDatabase(url, pool_size=2, statement_timeout=0.2)
        await db.connect()
        try:
            with pytest.raises(StoreError, match="statement timeout"):
                await db.execute("SELECT pg_sleep(2)")
            row = await db.fetchone("SELECT 1")  # the connection is usable again
            assert row is not None and row[0] == 1
        finally:
            await db.close()


def test_placeholders_are_numbered_outside_quotes_and_comments() -> None:
    sql = "SELECT ?, '?', \"a?\" FROM t WHERE x = ? -- why?\nAND y IN (?, ?)"
    assert translate(sql) == (
        "SELECT $1, '?', \"a?\" FROM t WHERE x = $2 -- why?\nAND y IN ($3, $4)"
    )
    assert translate("SELECT 'it''s ?' , ?") == "SELECT 'it''s ?' , $1"


def test_urls_are_redacted() -> None:
    assert redact("postgresql://tl:s3cret@db:5433/trustline?search_path=a") == (
        "postgresql://tl:***@db:5433/trustline?search_path=a"
    )
    assert redact("postgresql://tl@db/trustline") == "postgresql://tl@db/trustline"
    assert redact("postgresql://u:p@[::1]:5432/x") == "postgresql://u:***@[::1]:5432/x"


async def test_the_description_and_connection_errors_never_show_the_password() -> None:
    db = PostgresDatabase("postgresql://tl:s3cret@127.0.0.1:9/trustline")
    with pytest.raises(StoreError) as caught:
        await db.connect()
    assert "s3cret" not in str(caught.value) and "s3cret" not in db.description
    assert db.status() == (False, str(caught.value))
