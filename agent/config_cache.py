"""What a sound pools.toml was read as, kept in the data dir so a restart need not read 100,000
numbers again (tomllib and phonenumbers take seconds on such a file).

The copy is keyed by the file's SHA-256 together with everything that shaped what it holds:
this Python (tomllib), rtoml's and phonenumbers' versions and the code that reads numbers
(agent/phone.py, agent/config.py, agent/config_errors.py). It holds the data tomllib made of
the text, and each pool's numbers in E.164 in the order they are listed; it is written only for
a file that loaded whole. Every other check (schema, duplicates, fallbacks, zones...) runs
again on each load, so a file is judged the same with or without it. Only the centre's own
numbers are in it, no patient's.

Best effort and never a source of truth: a missing, stale or unreadable copy means a full
parse; a copy that cannot be written (a read-only data dir) is simply not kept. No other state.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import phonenumbers

if TYPE_CHECKING:
    from agent.config import PoolConfig

CACHE_NAME = "pools-cache.json"
FORMAT = "1"
# agent/ modules whose change makes a copy stale
_SHAPING_CODE = ("phone.py", "config.py", "config_errors.py")


@dataclass(frozen=True, slots=True)
class Parsed:
    data: dict[str, Any]  # what tomllib makes of the text
    e164: dict[str, list[str]]  # pool -> its numbers in E.164, as listed


def key_of(text: str) -> str:
    """What a copy of ``text``'s reading is kept under; "" (keep nothing) when the code that
    shapes it cannot be read (an install without sources)."""
    digest = hashlib.sha256()
    import rtoml

    for part in (FORMAT, sys.version, rtoml.__version__, phonenumbers.__version__):
        digest.update(part.encode() + b"\0")
    here = Path(__file__).parent
    try:
        for name in _SHAPING_CODE:
            digest.update((here / name).read_bytes() + b"\0")
    except OSError:
        return ""
    digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def load(cache_dir: Path, key: str) -> Parsed | None:
    """The copy kept for ``key``, or None (none, another file's, or unreadable)."""
    if not key:
        return None
    try:
        with (cache_dir / CACHE_NAME).open("rb") as f:
            kept = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("key") != key:
        return None
    data, e164 = kept.get("data"), kept.get("e164")
    if not isinstance(data, dict) or not isinstance(e164, dict):
        return None
    return Parsed(data, e164)


def store(cache_dir: Path, key: str, data: dict[str, Any], pools: Mapping[str, PoolConfig]) -> None:
    """Keep what the file of ``key`` was read as, replacing any other copy; quietly not when
    the data cannot be written as JSON (a TOML date) or the folder cannot be written."""
    if not key:
        return
    e164 = {name: [n.number for n in pool.numbers] for name, pool in pools.items()}
    try:
        payload = json.dumps({"key": key, "data": data, "e164": e164})
    except (TypeError, ValueError):
        return
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pools-cache.", dir=cache_dir)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(payload)
        os.replace(tmp, cache_dir / CACHE_NAME)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
