"""Sealed-recording chunks, version 1 (FORMAT.md, "Chunks"): seal and open chunk streams.

May: seal and open chunk streams with AES-256-GCM from ``cryptography``, encrypt chunks on a
small shared thread pool (the cipher releases the GIL), and name precisely what is wrong with
a chunk that fails to authenticate.
Must not: touch paths, the database or the keyring file, log anything, or hold more than a
bounded window of a recording in memory (``2 * WORKERS`` chunks, or runs of chunks when
sealing a file).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.recordings.header import (
    DEFAULT_CHUNK,
    TAG_BYTES,
    ChunkTampered,
    Hasher,
    Header,
    ReorderedChunks,
    SealingKey,
    SeekableSource,
    Sink,
    Source,
    SourceChanged,
    TruncatedRecording,
    new_header,
    open_header,
)

# Chunks are encrypted on this many threads (AES-GCM in ``cryptography`` releases the GIL);
# at most twice as many chunks are in flight, so memory stays bounded whatever the file size.
WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
# Audio per pool task when sealing a file: a run of chunks, so the fixed cost of handing a
# task between threads is paid once per run, not once per chunk (and memory stays bounded).
RUN_BYTES = 2 * 1024 * 1024
# How far the reorder diagnosis looks: it only runs on a failed chunk, but must stay bounded.
_REORDER_SEARCH = 4096


@dataclass(frozen=True)
class SealInfo:
    plain_size: int
    sealed_size: int
    key_id: str


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


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

    Every chunk has a fixed place in both files, so each pool task takes a run of consecutive
    chunks (``RUN_BYTES`` of audio): it reads each chunk with ``preadv`` into its slot's
    buffer, encrypts it (``encrypt_into``) into the slot's run buffer and writes it with
    ``pwrite`` while it is still in cache. Reading, encryption and writing run in parallel, no
    buffer is allocated per chunk, and the pool's fixed cost per task (a hand-off between
    threads, ~65 us of CPU) is paid once per run rather than once per chunk. This thread
    hands ``hasher`` each sealed run in file order, straight from its slot (``hashlib``
    releases the GIL, so hashing overlaps the pool), before the slot takes another run: at
    most ``2 * WORKERS`` runs are in flight. Same checks, same bytes on disk as
    ``encrypt_stream``.
    """
    header, aead = new_header(key, plain_length, chunk_size)
    head = header.encode()
    _pwrite_all(dst_fd, head, 0)
    if hasher is not None:
        hasher.update(head)
    count = header.chunk_count
    base = len(head)
    per_run = max(1, RUN_BYTES // chunk_size)
    runs = -(-count // per_run)
    window = min(runs, 2 * WORKERS)
    sealed_len = chunk_size + TAG_BYTES
    slots = [
        (memoryview(bytearray(chunk_size)), memoryview(bytearray(min(per_run, count) * sealed_len)))
        for _ in range(window)
    ]

    def seal_run(run: int) -> memoryview:
        plain, sealed = slots[run % window]
        pos = 0
        for index in range(run * per_run, min(count, (run + 1) * per_run)):
            want = header.chunk_plain_len(index)
            if _pread_exact(src_fd, plain[:want], index * chunk_size) < want:
                raise SourceChanged("the recording shrank while it was being sealed")
            nonce = _nonce(header.nonce_prefix, index, index == count - 1)
            out = sealed[pos : pos + want + TAG_BYTES]
            aead.encrypt_into(nonce, plain[:want], header.fixed, out)
            _pwrite_all(dst_fd, out, base + index * sealed_len)
            pos += len(out)
        return sealed[:pos]

    written = base + _in_order(runs, window, seal_run, hasher)
    if os.pread(src_fd, 1, plain_length):
        raise SourceChanged("the recording grew while it was being sealed")
    return SealInfo(plain_length, written, key.key_id)


def _in_order(
    tasks: int, window: int, seal_task: Callable[[int], memoryview], hasher: Hasher | None
) -> int:
    """Run ``seal_task(0..tasks-1)`` on the pool, ``window`` at a time, and hand ``hasher``
    each result in order before task ``i + window`` (which reuses its slot) is submitted.
    Returns the bytes sealed; on an error, waits for running tasks before raising."""
    pool = _workers()
    pending: deque[Future[memoryview]] = deque()
    total = 0
    try:
        for task in range(tasks):
            if len(pending) >= window:  # the oldest task frees the slot this one takes
                total += _hashed(pending.popleft().result(), hasher)
            pending.append(pool.submit(seal_task, task))
        while pending:
            total += _hashed(pending.popleft().result(), hasher)
    finally:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                future.exception()  # let a running task finish before the caller cleans up
    return total


def _pread_exact(fd: int, view: memoryview, offset: int) -> int:
    """Fill ``view`` from ``fd`` at ``offset``; fewer bytes only at end of file."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            break
        got += n
    return got


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _hashed(sealed: bytes | memoryview, hasher: Hasher | None) -> int:
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
