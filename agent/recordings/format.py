"""The sealed-recording file format, version 1 (see FORMAT.md beside this module).

May: build and parse headers, wrap and unwrap per-file data keys, seal and open chunk streams
with AES-256-GCM from ``cryptography``, encrypt chunks on a small shared thread pool (the
cipher releases the GIL), and name precisely what is wrong with a damaged file.
Must not: touch paths, the database or the keyring file, log anything, or hold more than a
bounded window of chunks (``2 * WORKERS``) of a recording in memory. No primitive is written
here; we only lay bytes out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

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
# Chunks are encrypted on this many threads (AES-GCM in ``cryptography`` releases the GIL);
# at most twice as many chunks are in flight, so memory stays bounded whatever the file size.
WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# How far the reorder diagnosis looks: it only runs on a failed chunk, but must stay bounded.
_REORDER_SEARCH = 4096


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


@dataclass(frozen=True)
class SealInfo:
    plain_size: int
    sealed_size: int
    key_id: str


def _fixed(chunk_size: int, plain_length: int, nonce_prefix: bytes) -> bytes:
    return _FIXED.pack(MAGIC, VERSION, 0, chunk_size, plain_length, nonce_prefix)


def _wrap_aad(fixed: bytes, key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    return _WRAP_CONTEXT + fixed + bytes([len(kid)]) + kid


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


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


def _workers() -> ThreadPoolExecutor:
    """The process's chunk-cipher pool, started on first use and shared by every seal."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="trustline-seal")
        return _pool


def encrypt_stream(
    src: Source,
    dst: Sink,
    key: SealingKey,
    plain_length: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    hasher: Hasher | None = None,
) -> SealInfo:
    """Seal exactly ``plain_length`` bytes of ``src`` into ``dst``; ``hasher`` sees all output.

    Chunks are read and written in order by the caller's thread and encrypted on the pool,
    at most ``2 * WORKERS`` at a time. Raises SourceChanged when ``src`` holds fewer or more
    bytes than announced: a file that is still being written must never be sealed half-way.
    """
    header, aead = new_header(key, plain_length, chunk_size)
    head = header.encode()
    dst.write(head)
    if hasher is not None:
        hasher.update(head)
    count = header.chunk_count
    written = len(head)
    pool = _workers()
    pending: deque[Future[bytes]] = deque()
    try:
        for index in range(count):
            want = header.chunk_plain_len(index)
            chunk = _read_chunk(src, want)
            if len(chunk) < want:
                raise SourceChanged("the recording shrank while it was being sealed")
            nonce = _nonce(header.nonce_prefix, index, index == count - 1)
            pending.append(pool.submit(aead.encrypt, nonce, chunk, header.fixed))
            if len(pending) >= 2 * WORKERS:
                written += _emit(pending.popleft().result(), dst, hasher)
        while pending:
            written += _emit(pending.popleft().result(), dst, hasher)
    finally:
        for future in pending:
            future.cancel()
    if src.read(1):
        raise SourceChanged("the recording grew while it was being sealed")
    return SealInfo(plain_length, written, key.key_id)


def encrypt_file(
    src_fd: int,
    dst_fd: int,
    key: SealingKey,
    plain_length: int,
    *,
    chunk_size: int = DEFAULT_CHUNK,
    hasher: Hasher | None = None,
) -> SealInfo:
    """``encrypt_stream`` between two regular files given as descriptors, faster.

    Every chunk has a fixed place in both files, so each pool task reads its chunk with
    ``pread``, encrypts it and writes it with ``pwrite``: reading, encryption and writing
    all run in parallel. This thread only hands ``hasher`` the sealed chunks in file order,
    keeping at most ``2 * WORKERS`` chunks in flight. Same checks, same bytes on disk.
    """
    header, aead = new_header(key, plain_length, chunk_size)
    head = header.encode()
    _pwrite_all(dst_fd, head, 0)
    if hasher is not None:
        hasher.update(head)
    count = header.chunk_count
    base = len(head)

    def seal_chunk(index: int) -> bytes:
        want = header.chunk_plain_len(index)
        chunk = os.pread(src_fd, want, index * chunk_size)
        while 0 < len(chunk) < want:
            more = os.pread(src_fd, want - len(chunk), index * chunk_size + len(chunk))
            if not more:
                break
            chunk += more
        if len(chunk) < want:
            raise SourceChanged("the recording shrank while it was being sealed")
        nonce = _nonce(header.nonce_prefix, index, index == count - 1)
        sealed = aead.encrypt(nonce, chunk, header.fixed)
        _pwrite_all(dst_fd, sealed, base + index * (chunk_size + TAG_BYTES))
        return sealed

    pool = _workers()
    pending: deque[Future[bytes]] = deque()
    written = base
    try:
        for index in range(count):
            pending.append(pool.submit(seal_chunk, index))
            if len(pending) >= 2 * WORKERS:
                written += _hashed(pending.popleft().result(), hasher)
        while pending:
            written += _hashed(pending.popleft().result(), hasher)
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # let a running task finish before the caller cleans up
    if os.pread(src_fd, 1, plain_length):
        raise SourceChanged("the recording grew while it was being sealed")
    return SealInfo(plain_length, written, key.key_id)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _hashed(sealed: bytes, hasher: Hasher | None) -> int:
    if hasher is not None:
        hasher.update(sealed)
    return len(sealed)


def _read_chunk(src: Source, want: int) -> bytes:
    """Up to ``want`` bytes (fewer only at end of file): a fresh buffer per chunk in flight."""
    data = src.read(want)
    while len(data) < want:
        more = src.read(want - len(data))
        if not more:
            break
        data += more
    return data


def _emit(sealed: bytes, dst: Sink, hasher: Hasher | None) -> int:
    dst.write(sealed)
    if hasher is not None:
        hasher.update(sealed)
    return len(sealed)


def _read_exact(src: Source, view: memoryview, want: int) -> int:
    got = 0
    while got < want:
        n = src.readinto(view[got:want])
        if not n:
            break
        got += n
    return got


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


def decrypt_stream(
    src: SeekableSource,
    dst: Sink | None,
    keys: Mapping[str, SealingKey],
    *,
    name: str = "recording",
    hasher: Hasher | None = None,
) -> Header:
    """Authenticate every chunk of ``src``; write the plaintext to ``dst`` unless it is None.

    Only authenticated bytes are ever written. ``hasher`` sees every byte of the sealed file.
    """
    header, aead = open_header(src, keys, name)
    if hasher is not None:
        hasher.update(header.encode())
    count = header.chunk_count
    buf = bytearray(header.chunk_size + TAG_BYTES)
    view = memoryview(buf)
    for index in range(count):
        want = header.chunk_plain_len(index) + TAG_BYTES
        if _read_exact(src, view, want) < want:
            raise TruncatedRecording(f"{name}: truncated while reading chunk {index}")
        sealed = view[:want]
        try:
            plain = aead.decrypt(
                _nonce(header.nonce_prefix, index, index == count - 1), sealed, header.fixed
            )
        except InvalidTag:
            _diagnose_chunk(header, aead, index, bytes(sealed), name)
        if hasher is not None:
            hasher.update(sealed)
        if dst is not None:
            dst.write(plain)
    return header


def spot_check(
    src: SeekableSource, keys: Mapping[str, SealingKey], *, name: str = "recording"
) -> Header:
    """Check a file we just sealed without a second pass over it: the header authenticates
    under the keyring (so the file can be opened), the size is exactly what the header
    promises, and the first and last chunks authenticate where they lie (nonce layout, AAD,
    last flag as written). Not a tamper check of a file of unknown origin: that is
    ``decrypt_stream``, which authenticates every chunk (see FORMAT.md, "Sealing").
    """
    header, aead = open_header(src, keys, name)
    count = header.chunk_count
    for index in sorted({0, count - 1}):
        want = header.chunk_plain_len(index) + TAG_BYTES
        src.seek(header.encoded_len + index * (header.chunk_size + TAG_BYTES))
        sealed = src.read(want)
        if len(sealed) < want:
            raise TruncatedRecording(f"{name}: truncated while reading chunk {index}")
        try:
            aead.decrypt(
                _nonce(header.nonce_prefix, index, index == count - 1), sealed, header.fixed
            )
        except InvalidTag:
            _diagnose_chunk(header, aead, index, sealed, name)
    return header


def _diagnose_chunk(header: Header, aead: AESGCM, index: int, sealed: bytes, name: str) -> NoReturn:
    """Raise the precise error for a chunk that failed to authenticate at ``index``."""
    count = header.chunk_count
    # An authentic chunk from another position (same length, so only full-size chunks can move).
    lo, hi = max(0, index - _REORDER_SEARCH // 2), min(count, index + _REORDER_SEARCH // 2)
    for other in sorted(range(lo, hi), key=lambda j: abs(j - index)):
        if other == index or header.chunk_plain_len(other) + TAG_BYTES != len(sealed):
            continue
        try:
            aead.decrypt(
                _nonce(header.nonce_prefix, other, other == count - 1), sealed, header.fixed
            )
        except InvalidTag:
            continue
        raise ReorderedChunks(
            f"{name}: chunks are out of order (position {index} holds chunk {other} of {count})"
        )
    raise ChunkTampered(
        f"{name}: chunk {index} of {count} failed authentication"
        " (the file was modified or is corrupt)"
    )


def rewrap_header(
    header: Header, keys: Mapping[str, SealingKey], new_key: SealingKey, name: str = "recording"
) -> Header:
    """The same file's header with its data key re-wrapped by ``new_key``; audio is untouched.

    The fixed part (chunk associated data) does not change, so every chunk stays valid.
    """
    return _wrapped_header(header.fixed, new_key, _unwrap_key(header, keys, name))
