"""The store interface every backend implements, and what the backends share about migrations.

May: name the API (``Database``, ``Row``), list a backend's numbered migration files, refuse a
database newer than this agent, parse and redact database URLs. Must not: open connections
or hold state (each backend does that in its own module: ``db.py``, ``postgres.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from agent.errors import ConfigError, StoreError

Params = Sequence[Any]
URL_SETTING = "TRUSTLINE_DATABASE_URL"
WHOLE_STORE = "store"  # the lock of every transaction that names no narrower one


class Row(Protocol):
    """A result row, readable by column index and by column name (sqlite3.Row, asyncpg.Record)."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def keys(self) -> Iterable[str]: ...


class Database(Protocol):
    """The one database API. SQL uses ``?`` placeholders and portable syntax on every backend.

    Each statement outside ``transaction()`` is atomic on its own. Inside ``transaction()``
    (entered by a task; nested uses join the outer one), the task's statements, whether sent
    through the database object or the one the context yields, see and write one consistent
    state. Transactions naming the same ``lock`` (by default ``WHOLE_STORE``: every one that
    names none) are serialised against each other on every backend, as SQLite's ``BEGIN
    IMMEDIATE`` does; SQLite serialises every transaction whatever it names. A transaction
    whose statements are each atomic and conditional on their own (an upsert, an UPDATE ...
    WHERE still-open) passes ``lock=None`` so that, on PostgreSQL, it waits for nobody but the
    rows it writes. Failures raise ``agent.errors.StoreError``.
    """

    description: str  # where the store is, for logs and /readyz; never holds a password

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Params = ()) -> Sequence[Row]: ...

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Many rows in one transaction."""
        ...

    def transaction(
        self, lock: str | None = WHOLE_STORE
    ) -> AbstractAsyncContextManager[Database]: ...

    @property
    def reads(self) -> Database:
        """Where background reads go (state polls, reloads), so they never queue in front of
        a claim: a connection of their own on SQLite; the pool itself on PostgreSQL."""
        ...

    async def start_checkpoints(self, interval: float = 1.0) -> None:
        """Housekeeping off the write path (SQLite's WAL checkpoints); nothing elsewhere."""
        ...

    async def close(self) -> None: ...


# -- migrations -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(backend: str) -> list[Migration]:
    """The numbered migrations of ``backend``: "sqlite" (the top folder) or "postgres"."""
    folder = resources.files("agent.store") / "migrations"
    if backend != "sqlite":
        folder = folder / backend
    found = [
        Migration(int(entry.name[:4]), entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql") and entry.name[:4].isdigit()
    ]
    return sorted(found, key=lambda m: m.version)


class SchemaTooNew(StoreError):
    """The database was migrated by a newer agent: starting would misread or damage it."""


def refuse_newer(applied: Iterable[int], known: Iterable[int], where: str) -> None:
    """Raise when the database holds migrations this agent does not know (a newer agent ran)."""
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise SchemaTooNew(
            f"the database {where} has schema version {unknown[-1]}, newer than this agent"
            f" knows (up to {max(known, default=0)}): upgrade trustline on this host before"
            " starting it against this database"
        )


# -- URLs -----------------------------------------------------------------------------------
SQLITE_SCHEMES = frozenset({"sqlite"})
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe for logs and error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        # Unparseable: keep only the scheme, the rest may hold a secret.
        return url.split(":", 1)[0] + ":***"


def parse_url(url: str) -> tuple[str, Path | None]:
    """("sqlite", path) or ("postgresql", None); anything else is a ConfigError naming the
    setting. A PostgreSQL URL keeps its query (``?search_path=...`` selects a schema)."""

    def bad(why: str) -> ConfigError:
        return ConfigError("environment", [f"{URL_SETTING}: {why} ({redact(url)})"])

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise bad("expected sqlite:///path or postgresql://user@host/database")
    if scheme in SQLITE_SCHEMES:
        # sqlite:///relative/or/absolute: the host part must be empty, as in SQLAlchemy.
        if not rest.startswith("/") or len(rest) < 2 or "?" in rest:
            raise bad("a SQLite URL is sqlite:///path/to/file.sqlite3")
        path = rest[1:]
        return "sqlite", Path(path)
    if scheme in POSTGRES_SCHEMES:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises on a port that is not a number
        except ValueError as exc:
            raise bad(f"malformed URL: {exc}") from None
        if not parts.hostname and "host=" not in parts.query:
            raise bad("a PostgreSQL URL names a host: postgresql://user@host/database")
        return "postgresql", None
    raise bad(f"unknown scheme {scheme!r}; expected sqlite, postgresql or postgres")
