"""Sealed-recording headers, version 1 (FORMAT.md, "Header"): layout, key wrapping, errors.

May: build and parse headers, wrap and unwrap per-file data keys with AES-256-GCM from
``cryptography``, name precisely what is wrong with a damaged header, define the errors a
sealed file can raise.
Must not: touch paths, the database or the keyring file, or log anything. No primitive is
written here; we only lay bytes out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.errors import RecordingError

MAGIC = b"\x89TLREC\r\n"  # PNG-style: catches 7-bit and newline-translating transfers
VERSION = 1
SUFFIX = ".tlrec"

# magic, version, flags (0), chunk size, plaintext length, nonce prefix
_FIXED = struct.Struct(">8sBBIQ7s")
FIXED_LEN = _FIXED.size  # 29
KEY_BYTES = 32  # AES-256
KCV_BYTES = 8
WRAP_NONCE_BYTES = 12
WRAPPED_BYTES = KEY_BYTES + 16  # data key + GCM tag
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 7
MAX_CHUNKS = 2**32  # the counter field is 4 bytes
MIN_CHUNK = 1024
MAX_CHUNK = 16 * 1024 * 1024
DEFAULT_CHUNK = 256 * 1024  # big enough that per-call overhead vanishes, small for players
KEY_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WRAP_CONTEXT = b"trustline/recording-dek/v1\x00"
_KCV_CONTEXT = b"trustline/key-check/v1"


class NotARecording(RecordingError):
    """The file does not start with the sealed-recording magic."""


class UnsupportedVersion(RecordingError):
    """The file is a sealed recording of a format version this code does not read."""


class TruncatedRecording(RecordingError):
    """The file is shorter than its header says: bytes were cut off."""


class ExtendedRecording(RecordingError):
    """Bytes were appended after the last chunk."""


class WrongKey(RecordingError):
    """The file was sealed with a key this keyring does not hold."""


class HeaderTampered(RecordingError):
    """The header (key id, wrapped data key, chunk size, length, nonce prefix) was modified."""


class ChunkTampered(RecordingError):
    """A chunk failed authentication: its bytes were modified (bit flip, splice, corruption)."""


class ReorderedChunks(RecordingError):
    """An authentic chunk sits at the wrong position."""


class SourceChanged(RecordingError):
    """The plaintext changed size while it was being sealed (still being written)."""


@dataclass(frozen=True)
class SealingKey:
    """A key-encryption key from the keyring. ``repr`` never shows the secret."""

    key_id: str
    secret: bytes = field(repr=False)
    created: float = 0.0

    def __post_init__(self) -> None:
        if not KEY_ID_RE.match(self.key_id):
            raise ValueError("key id must be 1-64 characters of A-Z a-z 0-9 . _ -")
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a sealing key must be 32 bytes")

    @property
    def check_value(self) -> bytes:
        """Key check value: names the key in a header without revealing anything about it."""
        return hmac.new(self.secret, _KCV_CONTEXT, hashlib.sha256).digest()[:KCV_BYTES]


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    """What sealing reads from: any binary file (raw or buffered)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...
    def read(self, size: int = -1, /) -> bytes: ...


class SeekableSource(Source, Protocol):
    """What opening reads from: the size check and the diagnosis need to seek."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True)
class Header:
    chunk_size: int
    plain_length: int
    nonce_prefix: bytes
    key_id: str
    check_value: bytes
    wrap_nonce: bytes
    wrapped_key: bytes
    fixed: bytes  # the encoded fixed part: associated data of every chunk

    @property
    def chunk_count(self) -> int:
        return max(1, -(-self.plain_length // self.chunk_size))

    @property
    def encoded_len(self) -> int:
        return FIXED_LEN + 1 + len(self.key_id) + KCV_BYTES + WRAP_NONCE_BYTES + WRAPPED_BYTES

    @property
    def sealed_len(self) -> int:
        """Total file size this header promises."""
        return self.encoded_len + self.plain_length + TAG_BYTES * self.chunk_count

    def encode(self) -> bytes:
        kid = self.key_id.encode("ascii")
        parts = (self.fixed, bytes([len(kid)]), kid, self.check_value)
        return b"".join((*parts, self.wrap_nonce, self.wrapped_key))

    def chunk_plain_len(self, index: int) -> int:
        if index < self.chunk_count - 1:
            return self.chunk_size
        return self.plain_length - self.chunk_size * (self.chunk_count - 1)


def _fixed(chunk_size: int, plain_length: int, nonce_prefix: bytes) -> bytes:
    return _FIXED.pack(MAGIC, VERSION, 0, chunk_size, plain_length, nonce_prefix)


def _wrap_aad(fixed: bytes, key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    return _WRAP_CONTEXT + fixed + bytes([len(kid)]) + kid


def new_header(
    key: SealingKey, plain_length: int, chunk_size: int = DEFAULT_CHUNK
) -> tuple[Header, AESGCM]:
    """A fresh header with a new random data key, wrapped by ``key``; returns the chunk cipher."""
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be between {MIN_CHUNK} and {MAX_CHUNK}")
    if plain_length < 0 or max(1, -(-plain_length // chunk_size)) > MAX_CHUNKS:
        raise ValueError("recording too large for the chunk size")
    data_key = AESGCM.generate_key(bit_length=256)
    fixed = _fixed(chunk_size, plain_length, os.urandom(NONCE_PREFIX_BYTES))
    header = _wrapped_header(fixed, key, data_key)
    return header, AESGCM(data_key)


def _wrapped_header(fixed: bytes, key: SealingKey, data_key: bytes) -> Header:
    wrap_nonce = os.urandom(WRAP_NONCE_BYTES)
    wrapped = AESGCM(key.secret).encrypt(wrap_nonce, data_key, _wrap_aad(fixed, key.key_id))
    _, _, _, chunk_size, plain_length, prefix = _FIXED.unpack(fixed)
    return Header(
        chunk_size, plain_length, prefix, key.key_id, key.check_value, wrap_nonce, wrapped, fixed
    )


def read_header(src: Source, size: int, name: str = "recording") -> Header:
    """Parse (not authenticate) the header at the start of ``src``; ``size`` is the file size."""
    fixed = src.read(FIXED_LEN)
    if len(fixed) < len(MAGIC) or fixed[: len(MAGIC)] != MAGIC[: len(fixed)]:
        raise NotARecording(f"{name}: not a Trustline sealed recording (bad magic)")
    if len(fixed) >= len(MAGIC) + 1 and fixed[len(MAGIC)] != VERSION:
        raise UnsupportedVersion(
            f"{name}: format version {fixed[len(MAGIC)]} is not supported"
            f" (this code reads {VERSION})"
        )
    if len(fixed) < FIXED_LEN:
        raise TruncatedRecording(f"{name}: truncated inside the header ({size} bytes in all)")
    _, _, flags, chunk_size, plain_length, prefix = _FIXED.unpack(fixed)
    kid_len_b = src.read(1)
    if not kid_len_b:
        raise TruncatedRecording(f"{name}: truncated inside the header ({size} bytes in all)")
    rest_len = kid_len_b[0] + KCV_BYTES + WRAP_NONCE_BYTES + WRAPPED_BYTES
    rest = src.read(rest_len)
    if len(rest) < rest_len:
        raise TruncatedRecording(f"{name}: truncated inside the header ({size} bytes in all)")
    kid_raw = rest[: kid_len_b[0]]
    pos = kid_len_b[0]
    check_value = rest[pos : pos + KCV_BYTES]
    pos += KCV_BYTES
    wrap_nonce = rest[pos : pos + WRAP_NONCE_BYTES]
    wrapped = rest[pos + WRAP_NONCE_BYTES :]
    key_id = kid_raw.decode("ascii", "replace")
    if flags != 0 or not MIN_CHUNK <= chunk_size <= MAX_CHUNK or not KEY_ID_RE.match(key_id):
        raise HeaderTampered(f"{name}: the header was modified (invalid field values)")
    return Header(chunk_size, plain_length, prefix, key_id, check_value, wrap_nonce, wrapped, fixed)


def unwrap(header: Header, keys: Mapping[str, SealingKey], name: str = "recording") -> AESGCM:
    """The chunk cipher of a file, or a precise error: wrong key versus a modified header."""
    return AESGCM(_unwrap_key(header, keys, name))


def _unwrap_key(header: Header, keys: Mapping[str, SealingKey], name: str) -> bytes:
    key = keys.get(header.key_id)
    by_check = {k.check_value: k for k in keys.values()}
    if key is None:
        if header.check_value in by_check:
            raise HeaderTampered(f"{name}: the header was modified (key id altered)")
        raise WrongKey(
            f"{name}: sealed with key {header.key_id!r}, which this keyring does not hold"
        )
    try:
        data_key = AESGCM(key.secret).decrypt(
            header.wrap_nonce, header.wrapped_key, _wrap_aad(header.fixed, header.key_id)
        )
    except InvalidTag:
        if header.check_value == key.check_value or header.check_value in by_check:
            raise HeaderTampered(
                f"{name}: the header was modified (the data key does not authenticate)"
            ) from None
        raise WrongKey(
            f"{name}: sealed with a different key named {header.key_id!r} than this keyring's"
        ) from None
    if header.check_value != key.check_value:
        raise HeaderTampered(f"{name}: the header was modified (key check value altered)")
    return data_key


def open_header(
    src: SeekableSource, keys: Mapping[str, SealingKey], name: str = "recording"
) -> tuple[Header, AESGCM]:
    """Read, authenticate and size-check the header; ``src`` is left at the first chunk."""
    size = src.seek(0, os.SEEK_END)
    src.seek(0)
    header = read_header(src, size, name)
    aead = unwrap(header, keys, name)
    if size < header.sealed_len:
        raise TruncatedRecording(
            f"{name}: truncated, {header.sealed_len - size} bytes missing "
            f"(header declares {header.plain_length} bytes of audio in {header.chunk_count} chunks)"
        )
    if size > header.sealed_len:
        raise ExtendedRecording(
            f"{name}: {size - header.sealed_len} unexpected bytes after the last chunk"
        )
    return header, aead


def rewrap_header(
    header: Header, keys: Mapping[str, SealingKey], new_key: SealingKey, name: str = "recording"
) -> Header:
    """The same file's header with its data key re-wrapped by ``new_key``; audio is untouched.

    The fixed part (chunk associated data) does not change, so every chunk stays valid.
    """
    return _wrapped_header(header.fixed, new_key, _unwrap_key(header, keys, name))
