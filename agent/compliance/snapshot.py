"""The agent's local copy of the opt-out set, for a start while the store does not answer.

May: write the set the agent last read from the store (keyed hashes and purposes only, never a
number) to one file in the data folder, atomically and readable by the agent's user alone;
read it back. Must not: stand in for the store once the store answers (the service reads the
store first and keeps the copy only as its last resort), or accept a file it cannot read
whole (a torn or foreign file is reported and ignored, and the agent then treats the set as
unknown).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = "trustline-optouts-v1"


class SnapshotError(Exception):
    """The copy is missing, unreadable or not ours."""


def write(path: Path, optouts: set[tuple[str, str]], read_at: float) -> None:
    """Replace the copy with ``optouts`` (as read from the store at ``read_at``)."""
    body = json.dumps(
        {"format": FORMAT, "read_at": read_at, "optouts": sorted([h, p] for h, p in optouts)},
        separators=(",", ":"),
    ).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(path: Path) -> tuple[set[tuple[str, str]], float]:
    """The copied set and when it was read from the store."""
    try:
        found = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no copy yet") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: unreadable ({exc})") from None
    try:
        if found["format"] != FORMAT:
            raise SnapshotError(f"{path}: not a Trustline opt-out copy")
        pairs = {(str(h), str(p)) for h, p in found["optouts"]}
        return pairs, float(found["read_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SnapshotError(f"{path}: malformed ({exc!r})") from None
