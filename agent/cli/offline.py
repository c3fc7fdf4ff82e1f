"""What admin commands share: the existing store, the pools file, the callee-hash key, and the
builder (agent.build) that makes their services as ``trustline run`` makes them.

May: open the store the running agent uses, load pools.toml. Must not: create a store or a
data folder (only ``trustline run`` does), so a command run with the wrong data folder says
which store it expected instead of answering about a new empty one.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from agent.errors import ConfigError, StoreNotFound

if TYPE_CHECKING:
    from agent.build import Builder
    from agent.config import Config
    from agent.settings import Settings
    from agent.store import Database

WITHOUT_POOLS = "block list, allow list, reinstate +E164, keys and recordings"


def missing_store_message(settings: Settings) -> str:
    return (
        f"no store at {settings.database_path}; admin commands never create one. The agent "
        "creates it on its first `trustline run`: point at the agent's data folder with "
        "--data-dir DIR or TRUSTLINE_DATA_DIR"
    )


async def open_admin_store(settings: Settings) -> Database:
    """The store of the agent configured by ``settings``; StoreNotFound when there is none.

    A SQLite file must already exist (an admin command never creates one); a PostgreSQL URL
    is opened as given."""
    from agent.store import open_database

    if settings.database_url is None and not settings.database_path.is_file():
        raise StoreNotFound(missing_store_message(settings))
    return await open_database(settings.database, pool_size=settings.database_pool_size)


@contextlib.asynccontextmanager
async def admin_store(settings: Settings) -> AsyncIterator[Database]:
    db = await open_admin_store(settings)
    try:
        yield db
    finally:
        await db.close()


@contextlib.asynccontextmanager
async def build(
    settings: Settings, config: Config | None = None, *, key: bytes | None = None
) -> AsyncIterator[Builder]:
    """The builder over the agent's existing store, for one admin command. ``config``: the
    pools.toml the command loaded (None: a command that works without it); ``key``: the
    callee-hash key (None: read beside the store once it is open; b"": the command needs none)."""
    from agent.build import Builder, CurrentConfig
    from agent.clock import SystemClock

    async with admin_store(settings) as db:
        yield Builder(
            settings,
            db,
            SystemClock(),
            hash_key=hash_key(settings) if key is None else key,
            config=None if config is None else CurrentConfig(config),
        )


def hash_key(settings: Settings) -> bytes:
    """The callee-hash key beside an existing store."""
    from agent.datadir import load_hash_key

    if not settings.hash_key_path.is_file():
        raise StoreNotFound(
            f"no callee-hash key at {settings.hash_key_path} beside the store; "
            "start the agent once (`trustline run`) with this data folder"
        )
    return load_hash_key(settings.hash_key_path)


def pools(settings: Settings, command: str) -> Config:
    """pools.toml for a command that needs it; an invalid file says what still works."""
    from agent.config import load_config

    try:
        return load_config(settings.config)
    except ConfigError as exc:
        raise ConfigError(
            exc.source,
            exc.problems,
            hint=f"`trustline {command}` needs the pools file; fix it (`trustline check-config "
            f"{settings.config}`). Meanwhile {WITHOUT_POOLS} still work.",
        ) from None


def os_actor() -> str:
    """Who runs an admin command: the OS login (and the sudo user behind it)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo else user
