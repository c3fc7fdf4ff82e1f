"""The digest a recording's row keeps of its sealed file: BLAKE3 now, SHA-256 read as before.

A row's ``sha256`` and ``pending_sha256`` columns (named when they held only SHA-256) hold a
digest text: ``blake3:<64 hex>`` for a file sealed or re-wrapped since, a bare 64-hex SHA-256
for a row written before. Both are read as they are: a file is hashed in the algorithm of each
value it is compared with, so an older row still proves its file, and a re-wrap moves it on.

Why BLAKE3 (the ``blake3`` package: the reference Rust implementation, with SIMD): hashing the
sealed file was the dearest step of sealing (SHA-256 1.6 GB/s here, even with SHA-NI, against
7.5 GB/s for AES-GCM); BLAKE3 gives the same 256-bit collision resistance at 4.7 GB/s.
Pure: no I/O, no logging.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

PREFIX = "blake3:"


class _Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def _blake3() -> _Hash:
    # Imported at the first file hashed: 0.9 MB of RSS an agent without recordings never pays.
    from blake3 import blake3

    return blake3()


def _is_legacy(value: str | None) -> bool:
    return value is not None and not value.startswith(PREFIX)


class FileDigest:
    """Every byte of a sealed file, once, for each digest it must match (a ``Hasher``)."""

    def __init__(self, *compared: str | None, legacy: bool = False) -> None:
        """``compared``: the values this file will be checked against; an older SHA-256 among
        them (or ``legacy``) has the file hashed in SHA-256 too."""
        self._blake = _blake3()
        wanted = legacy or any(_is_legacy(value) for value in compared)
        self._sha: _Hash | None = hashlib.sha256() if wanted else None

    def update(self, data: bytes | memoryview, /) -> None:
        self._blake.update(data)
        if self._sha is not None:
            self._sha.update(data)

    def text(self) -> str:
        """The digest a row stores for this file from now on."""
        return PREFIX + self._blake.hexdigest()

    def older(self) -> tuple[str, ...]:
        """The file's SHA-256, when it was asked for: how a row from before names it."""
        return (self._sha.hexdigest(),) if self._sha is not None else ()

    def matches(self, value: str | None) -> bool:
        """Whether ``value`` (a row's digest text, either kind) names this very file. Any text
        is answered, junk included (a row edited by hand): a digest is no secret, so a plain
        comparison, which unlike hmac.compare_digest takes non-ASCII text too."""
        if value is None:
            return False
        found = self.text() if value.startswith(PREFIX) else next(iter(self.older()), None)
        return found is not None and found == value
