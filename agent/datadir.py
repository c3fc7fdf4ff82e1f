"""The agent's data folder: its store and the callee-hash key beside it. ``trustline run``
creates them on first start (readable by the agent only); admin commands only open them
(agent/cli/offline.py says which store it expected when there is none).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.settings import Settings
    from agent.store import Database


def load_hash_key(path: Path) -> bytes:
    """The secret that keys callee hashes; created on first use, readable by the agent only."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        return key
    if len(key) < 32:
        raise ConfigError(str(path), ["callee hash key is shorter than 32 bytes"])
    return key


async def open_store(settings: Settings, *, wait: bool = True) -> Database:
    """The store TRUSTLINE_DATABASE_URL names; ``wait=False`` lets the agent start while a
    PostgreSQL server is still unreachable (calls get the fallback until it connects)."""
    from agent.store import open_database

    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # store and keys: agent only
    return await open_database(settings.database, pool_size=settings.database_pool_size, wait=wait)
