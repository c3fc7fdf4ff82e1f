"""Sealed-recording chunks, version 1 (FORMAT.md, "Chunks"): seal and open chunk streams.

May: seal and open chunk streams with AES-256-GCM from ``cryptography``, encrypt chunks on
several threads (the cipher releases the GIL), and name precisely what is wrong with a chunk
that fails to authenticate.
Must not: touch paths, the database or the keyring file, log anything, or hold more than a
bounded window of a recording in memory (``2 * WORKERS`` chunks for a stream; one chunk and
one run per lane when sealing a file).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Mapping
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
# Audio per run when sealing a file: each lane seals a run of chunks, then takes its turn at
# the digest, so the cost of a turn (waiting for the lane before) is paid once per run.
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

    Every chunk has a fixed place in both files, so the file is cut into runs of consecutive
    chunks (``RUN_BYTES`` of audio) sealed by ``WORKERS`` lanes at once (``_Lanes``): each
    lane reads, encrypts and writes its runs, and the lanes take turns feeding ``hasher``
    in file order. Same checks, same bytes on disk as ``encrypt_stream``.
    """
    header, aead = new_header(key, plain_length, chunk_size)
    head = header.encode()
    _pwrite_all(dst_fd, head, 0)
    if hasher is not None:
        hasher.update(head)
    sealed = _Lanes(src_fd, dst_fd, header, aead, hasher).run()
    if os.pread(src_fd, 1, plain_length):
        raise SourceChanged("the recording grew while it was being sealed")
    return SealInfo(plain_length, len(head) + sealed, key.key_id)


class _Lanes:
    """The runs of one file, dealt to lanes in turn: lane ``k`` seals runs ``k``,
    ``k + lanes``, ... The calling thread is lane 0 and the others are threads of this seal,
    not the shared pool: a lane waits for the one before it, so all must run at once.

    A lane reads each chunk of its run with ``preadv``, encrypts it (``encrypt_into``) into
    its run buffer and writes it with ``pwrite`` while it is in cache; then, once the run
    before it is hashed, it hands the hasher its run. The digest sees the file in order, and
    hashing one run overlaps the reading, encryption and writing of the next (all of them
    release the GIL). No buffer is allocated per chunk, no run waits for a hand-off between
    threads, and a lane holds one chunk and one run in memory. The first error stops every
    lane; ``run`` raises it once all have stopped.

    Why a write per chunk, not per run: one 2 MiB write per run was a little faster, but on
    ext4 it now and then stalled a seal for ~0.35 s at 0.4-0.6 s of CPU; chunk-sized writes
    never did (bench/recordings.py --dir on a disk).
    """

    def __init__(
        self, src_fd: int, dst_fd: int, header: Header, aead: AESGCM, hasher: Hasher | None
    ) -> None:
        self._src, self._dst, self._header, self._aead = src_fd, dst_fd, header, aead
        self._hasher = hasher
        self._per_run = max(1, RUN_BYTES // header.chunk_size)
        self._runs = -(-header.chunk_count // self._per_run)
        self._lanes = max(1, min(WORKERS, self._runs))
        self._turn = threading.Condition()
        self._hashed = 0  # runs handed to the hasher so far (under ``_turn``)
        self._failed: list[BaseException] = []  # the first error of any lane (under ``_turn``)
        self._written = [0] * self._lanes

    def run(self) -> int:
        """Seal every run; the bytes written after the header."""
        helpers = [
            threading.Thread(target=self._lane, args=(k,), name=f"trustline-seal-{k}", daemon=True)
            for k in range(1, self._lanes)
        ]
        for helper in helpers:
            helper.start()
        try:
            self._lane(0)
        finally:
            for helper in helpers:
                helper.join()
        if self._failed:
            raise self._failed[0]
        return sum(self._written)

    def _lane(self, k: int) -> None:
        header = self._header
        plain = memoryview(bytearray(header.chunk_size))
        sealed = memoryview(
            bytearray(min(self._per_run, header.chunk_count) * (header.chunk_size + TAG_BYTES))
        )
        try:
            for run in range(k, self._runs, self._lanes):
                if self._failed:
                    return
                length = self._seal_run(run, plain, sealed)
                self._written[k] += length
                if self._hasher is not None and not self._hash_in_turn(run, sealed[:length]):
                    return
        except BaseException as exc:
            with self._turn:
                self._failed.append(exc)
                self._turn.notify_all()

    def _seal_run(self, run: int, plain: memoryview, sealed: memoryview) -> int:
        """Read, encrypt and write the chunks of ``run``, sealed into ``sealed``; their length."""
        header, count = self._header, self._header.chunk_count
        first, pos = run * self._per_run, 0
        for index in range(first, min(count, first + self._per_run)):
            want = header.chunk_plain_len(index)
            if _pread_exact(self._src, plain[:want], index * header.chunk_size) < want:
                raise SourceChanged("the recording shrank while it was being sealed")
            out = sealed[pos : pos + want + TAG_BYTES]
            nonce = _nonce(header.nonce_prefix, index, index == count - 1)
            self._aead.encrypt_into(nonce, plain[:want], header.fixed, out)
            _pwrite_all(
                self._dst, out, header.encoded_len + index * (header.chunk_size + TAG_BYTES)
            )
            pos += len(out)
        return pos

    def _hash_in_turn(self, run: int, data: memoryview) -> bool:
        """Wait for the runs before ``run`` to be hashed, then hash it; False if a lane failed."""
        assert self._hasher is not None
        with self._turn:
            while self._hashed != run and not self._failed:
                self._turn.wait()
            if self._failed:
                return False
        self._hasher.update(data)  # alone: the lanes after this one wait their turn
        with self._turn:
            self._hashed = run + 1
            self._turn.notify_all()
        return True


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
