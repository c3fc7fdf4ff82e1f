"""What a sound pools.toml was read as, kept in the data dir so a restart need not read 100,000
numbers again (parsing the text, validating each entry and reading it in E.164 take seconds).

The copy is keyed by the file's SHA-256 together with everything that shaped what it holds:
this Python, rtoml's, pydantic's and phonenumbers' versions, and the code that reads and
checks numbers (agent/phone.py, agent/config*.py, agent/contact/cnam.py). It holds the data the
parser made of the text but the pools' numbers, and each pool's numbers as read (E.164, caller
name, daily cap, active) in the order they are listed; it is written only for a file that
loaded whole, whose every entry was then found sound. The other sections and the pools' own
keys are validated again on each load, and so are fallbacks, purposes and [contact]. Only the
centre's own numbers are in it, no patient's.

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
from typing import Any

import phonenumbers
import pydantic_core

from agent.config_numbers import PoolColumns

CACHE_NAME = "pools-cache.json"
FORMAT = "2"
# agent/ modules whose change makes a copy stale
_SHAPING_CODE = (
    "phone.py",
    "config.py",
    "config_errors.py",
    "config_schema.py",
    "config_numbers.py",
    "contact/cnam.py",
)


@dataclass(frozen=True, slots=True)
class Parsed:
    data: dict[str, Any]  # what the parser made of the text, without the pools' numbers
    numbers: dict[str, PoolColumns]  # pool -> its numbers as read, as listed


def key_of(text: str) -> str:
    """What a copy of ``text``'s reading is kept under; "" (keep nothing) when the code that
    shapes it cannot be read (an install without sources)."""
    digest = hashlib.sha256()
    import rtoml

    versions = (rtoml.__version__, pydantic_core.__version__, phonenumbers.__version__)
    for part in (FORMAT, sys.version, *versions):
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
    data, numbers = kept.get("data"), kept.get("numbers")
    if not isinstance(data, dict) or not isinstance(numbers, dict):
        return None
    pools = data.get("pools")
    if not isinstance(pools, dict) or list(pools) != list(numbers):
        return None
    columns = {name: _columns(kept) for name, kept in numbers.items()}
    if any(c is None for c in columns.values()):
        return None
    return Parsed(data, {name: c for name, c in columns.items() if c is not None})


def _columns(kept: Any) -> PoolColumns | None:
    """One pool's numbers as stored: names once each, and each number's index into them."""
    try:
        names: list[str] = kept["names"]
        numbers = PoolColumns(
            kept["e164"], [names[i] for i in kept["name_at"]], kept["caps"], kept["active"]
        )
    except (TypeError, KeyError, IndexError):
        return None
    size = len(numbers.numbers)
    if any(len(c) != size for c in (numbers.names, numbers.caps, numbers.active)):
        return None
    typed = (
        all(type(n) is str for n in numbers.numbers)
        and all(type(c) is int for c in numbers.caps)
        and all(type(a) is bool for a in numbers.active)
    )
    return numbers if typed else None


def store(
    cache_dir: Path, key: str, data: dict[str, Any], numbers: Mapping[str, PoolColumns]
) -> None:
    """Keep what the file of ``key`` was read as, replacing any other copy; quietly not when
    the data cannot be written as JSON (a TOML date) or the folder cannot be written."""
    if not key:
        return
    pools = {
        name: {k: v for k, v in table.items() if k != "numbers"}
        for name, table in data["pools"].items()
    }
    try:
        payload = json.dumps(
            {
                "key": key,
                "data": {**data, "pools": pools},
                "numbers": {name: _stored(c) for name, c in numbers.items()},
            }
        )
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


def _stored(numbers: PoolColumns) -> dict[str, list[Any]]:
    index: dict[str, int] = {}
    name_at = [index.setdefault(name, len(index)) for name in numbers.names]
    return {
        "e164": numbers.numbers,
        "names": list(index),
        "name_at": name_at,
        "caps": numbers.caps,
        "active": numbers.active,
    }
