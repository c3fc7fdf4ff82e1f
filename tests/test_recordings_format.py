"""The sealed-recording format: byte-for-byte round trips and a distinct error per damage kind."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import threading
import tracemalloc
from pathlib import Path

import pytest

from agent.errors import RecordingError
from agent.recordings import format as fmt
from tests.captures import MIXMONITOR_WAV

CAPTURE = MIXMONITOR_WAV
SMALL_CHUNK = 4096


def key(name: str = "k-test") -> fmt.SealingKey:
    return fmt.SealingKey(name, secrets.token_bytes(32), 0.0)


def seal(data: bytes, k: fmt.SealingKey, chunk: int = SMALL_CHUNK) -> bytes:
    out = io.BytesIO()
    fmt.encrypt_stream(io.BytesIO(data), out, k, len(data), chunk_size=chunk)
    return out.getvalue()


def unseal(blob: bytes, *keys: fmt.SealingKey) -> bytes:
    out = io.BytesIO()
    fmt.decrypt_stream(io.BytesIO(blob), out, {k.key_id: k for k in keys})
    return out.getvalue()


def header_len(blob: bytes) -> int:
    h = fmt.read_header(io.BytesIO(blob), len(blob))
    return h.encoded_len


@pytest.fixture(scope="module")
def wav() -> bytes:
    return CAPTURE.read_bytes()


@pytest.mark.parametrize("chunk", [fmt.MIN_CHUNK, SMALL_CHUNK, fmt.DEFAULT_CHUNK, fmt.MAX_CHUNK])
def test_real_recording_round_trips_byte_for_byte(wav: bytes, chunk: int) -> None:
    k = key()
    blob = seal(wav, k, chunk)
    assert blob.startswith(fmt.MAGIC)
    assert wav[:64] not in blob  # the RIFF header and first samples are not visible
    assert unseal(blob, k) == wav


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK]
)
def test_edge_sizes_round_trip(size: int) -> None:
    k = key()
    data = os.urandom(size)
    blob = seal(data, k)
    assert unseal(blob, k) == data
    # Size is fully determined by the header: one tag per chunk, at least one chunk.
    chunks = max(1, -(-size // SMALL_CHUNK))
    assert len(blob) == header_len(blob) + size + 16 * chunks


def test_sealing_twice_gives_unrelated_files(wav: bytes) -> None:
    k = key()
    a, b = seal(wav, k), seal(wav, k)
    assert a[: len(fmt.MAGIC)] == b[: len(fmt.MAGIC)]
    assert a[100:200] != b[100:200]  # fresh data key and nonce prefix per file


def damaged(wav: bytes, k: fmt.SealingKey) -> dict[str, bytes]:
    blob = seal(wav, k)
    h = header_len(blob)
    step = SMALL_CHUNK + 16
    body = blob[h:]
    flipped = bytearray(blob)
    flipped[h + step * 3 + 100] ^= 0x01
    swapped = bytearray(blob)
    swapped[h + step : h + 2 * step] = body[2 * step : 3 * step]
    swapped[h + 2 * step : h + 3 * step] = body[step : 2 * step]
    return {
        "truncated": blob[: h + step * 5],
        "bit-flipped": bytes(flipped),
        "reordered": bytes(swapped),
        "extended": blob + b"\x00" * 32,
    }


def test_each_kind_of_damage_is_rejected_with_its_own_clear_error(wav: bytes) -> None:
    k = key()
    expected = {
        "truncated": (fmt.TruncatedRecording, "truncated"),
        "bit-flipped": (fmt.ChunkTampered, "failed authentication"),
        "reordered": (fmt.ReorderedChunks, "out of order"),
        "extended": (fmt.ExtendedRecording, "unexpected bytes after the last chunk"),
    }
    seen = {}
    for kind, blob in damaged(wav, k).items():
        with pytest.raises(RecordingError) as info:
            unseal(blob, k)
        cls, words = expected[kind]
        assert type(info.value) is cls, kind
        assert words in str(info.value)
        seen[kind] = type(info.value)
    with pytest.raises(RecordingError) as info:
        unseal(seal(wav, k), key("k-other"))
    assert type(info.value) is fmt.WrongKey
    assert "k-test" in str(info.value) and "does not hold" in str(info.value)
    seen["wrong key"] = type(info.value)
    assert len(set(seen.values())) == len(seen)  # five kinds, five distinct errors


def test_damage_is_detected_before_any_plaintext_is_released(wav: bytes) -> None:
    k = key()
    for kind in ("truncated", "extended"):
        out = io.BytesIO()
        with pytest.raises(RecordingError):
            fmt.decrypt_stream(io.BytesIO(damaged(wav, k)[kind]), out, {k.key_id: k})
        assert out.getvalue() == b"", kind


def test_same_key_id_but_different_key_is_a_wrong_key(wav: bytes) -> None:
    blob = seal(wav, key("k-shared"))
    with pytest.raises(fmt.WrongKey, match="different key"):
        unseal(blob, key("k-shared"))


def test_a_truncated_last_chunk_at_a_boundary_is_truncation(wav: bytes) -> None:
    k = key()
    blob = seal(wav, k)
    with pytest.raises(fmt.TruncatedRecording, match="bytes missing"):
        unseal(blob[:-1], k)
    with pytest.raises(fmt.TruncatedRecording, match="inside the header"):
        unseal(blob[:20], k)


@pytest.mark.parametrize(
    "field,offset",
    [("length", 14), ("chunk size", 12), ("nonce prefix", 25), ("wrapped key", -10)],
)
def test_header_tampering_is_its_own_error(wav: bytes, field: str, offset: int) -> None:
    k = key()
    blob = bytearray(seal(wav, k))
    h = header_len(bytes(blob))
    blob[offset if offset >= 0 else h + offset] ^= 0x04
    with pytest.raises(fmt.HeaderTampered, match="header was modified"):
        unseal(bytes(blob), k)


def test_renamed_key_id_is_tampering_not_a_wrong_key(wav: bytes) -> None:
    k = key("k-aaaa")
    blob = bytearray(seal(wav, k))
    blob[fmt.FIXED_LEN + 1 + 5] = ord("b")  # k-aaaa -> k-aaab
    with pytest.raises(fmt.HeaderTampered):
        unseal(bytes(blob), k)


def test_other_files_are_named_for_what_they_are(wav: bytes) -> None:
    k = key()
    with pytest.raises(fmt.NotARecording):
        unseal(wav, k)
    blob = bytearray(seal(wav, k))
    blob[len(fmt.MAGIC)] = 2
    with pytest.raises(fmt.UnsupportedVersion, match="version 2"):
        unseal(bytes(blob), k)


def test_a_chunk_from_another_recording_is_tampering(wav: bytes) -> None:
    k = key()
    a, b = seal(wav, k), seal(wav, k)
    h = header_len(a)
    spliced = a[: h + SMALL_CHUNK + 16] + b[h + SMALL_CHUNK + 16 : h + 2 * (SMALL_CHUNK + 16)]
    spliced += a[h + 2 * (SMALL_CHUNK + 16) :]
    with pytest.raises(fmt.ChunkTampered):
        unseal(spliced, k)


def test_source_that_grows_or_shrinks_while_sealing_is_refused(wav: bytes) -> None:
    k = key()
    with pytest.raises(fmt.SourceChanged, match="grew"):
        fmt.encrypt_stream(io.BytesIO(wav), io.BytesIO(), k, len(wav) - 10)
    with pytest.raises(fmt.SourceChanged, match="shrank"):
        fmt.encrypt_stream(io.BytesIO(wav), io.BytesIO(), k, len(wav) + 10)


def test_rewrapped_header_opens_with_the_new_key_and_keeps_every_chunk(wav: bytes) -> None:
    old, new = key("k-old"), key("k-new")
    blob = seal(wav, old)
    header = fmt.read_header(io.BytesIO(blob), len(blob))
    fresh = fmt.rewrap_header(header, {old.key_id: old}, new)
    rewrapped = fresh.encode() + blob[header.encoded_len :]
    assert unseal(rewrapped, new) == wav
    with pytest.raises(fmt.WrongKey):
        unseal(rewrapped, old)


class Zeros(io.RawIOBase):
    """A large plaintext that exists nowhere in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]  # a memoryview is what arrives
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


class Discard(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]  # bytes is what arrives
        return len(b)


def test_memory_does_not_grow_with_file_size() -> None:
    k = key()
    peaks = []
    for size in (8 * 2**20, 64 * 2**20):
        tracemalloc.start()
        fmt.encrypt_stream(Zeros(size), Discard(), k, size, chunk_size=fmt.DEFAULT_CHUNK)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    # The pool's window: 2 * WORKERS chunks in flight, each as plaintext and ciphertext.
    assert peaks[1] < (4 * fmt.WORKERS + 2) * fmt.DEFAULT_CHUNK + 2**20
    assert peaks[1] < peaks[0] * 1.5 + 65536


def test_key_material_never_shows_in_repr_or_errors(wav: bytes) -> None:
    k = key()
    assert k.secret.hex() not in repr(k) and repr(k.secret) not in repr(k)
    messages = []
    for blob in damaged(wav, k).values():
        with pytest.raises(RecordingError) as info:
            unseal(blob, k)
        messages.append(str(info.value))
    for text in messages:
        assert k.secret.hex() not in text
        assert k.secret.hex()[:16] not in text
    assert k.secret not in seal(wav, k)


def test_opening_a_large_file_also_holds_one_chunk_at_a_time(tmp_path: Path) -> None:
    k = key()
    size = 48 * 2**20
    sealed = tmp_path / "big.tlrec"
    with open(sealed, "wb") as dst:
        fmt.encrypt_stream(Zeros(size), dst, k, size)
    tracemalloc.start()
    with open(sealed, "rb") as src:
        header = fmt.decrypt_stream(src, Discard(), {k.key_id: k})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert header.plain_length == size
    assert peak < 4 * fmt.DEFAULT_CHUNK + 2**20


def test_parallel_file_sealing_writes_the_same_format_and_refuses_a_changing_source(
    wav: bytes, tmp_path: Path
) -> None:
    k = key()
    data = wav * 7  # many chunks, more than the pool's window, and a short last one
    src, dst = tmp_path / "in.wav", tmp_path / "out.tlrec"
    src.write_bytes(data)
    digest = hashlib.sha256()
    with open(src, "rb") as s, open(dst, "wb") as d:
        info = fmt.encrypt_file(
            s.fileno(), d.fileno(), k, len(data), chunk_size=SMALL_CHUNK, hasher=digest
        )
    blob = dst.read_bytes()
    assert info.sealed_size == len(blob) and digest.hexdigest() == hashlib.sha256(blob).hexdigest()
    assert unseal(blob, k) == data
    with open(dst, "rb") as f:
        assert fmt.spot_check(f, {k.key_id: k}).plain_length == len(data)
    # The spot check of a fresh seal still names a damaged first or last chunk.
    for at in (header_len(blob) + 5, len(blob) - 3):
        bad = tmp_path / f"bad{at}.tlrec"
        bad.write_bytes(blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :])
        with open(bad, "rb") as f, pytest.raises(fmt.ChunkTampered):
            fmt.spot_check(f, {k.key_id: k})
    with open(src, "rb") as s, open(dst, "wb") as d:
        with pytest.raises(fmt.SourceChanged, match="grew"):
            fmt.encrypt_file(s.fileno(), d.fileno(), k, len(data) - 10)
        with pytest.raises(fmt.SourceChanged, match="shrank"):
            fmt.encrypt_file(s.fileno(), d.fileno(), k, len(data) + 10, chunk_size=SMALL_CHUNK)


def test_a_file_of_many_pool_tasks_seals_in_order_and_opens(tmp_path: Path) -> None:
    """Each pool task seals a run of chunks: more runs than the pool holds at once, and a
    short last run ending in a short chunk, give the same audio and the hash of the file."""
    k = key()
    size = fmt.RUN_BYTES * (2 * fmt.WORKERS + 3) + 3 * fmt.DEFAULT_CHUNK + 777
    data = secrets.token_bytes(size)
    src, dst = tmp_path / "in.wav", tmp_path / "out.tlrec"
    src.write_bytes(data)
    digest = hashlib.sha256()
    with open(src, "rb") as s, open(dst, "wb") as d:
        info = fmt.encrypt_file(s.fileno(), d.fileno(), k, size, hasher=digest)
    blob = dst.read_bytes()
    assert info.sealed_size == len(blob) and digest.hexdigest() == hashlib.sha256(blob).hexdigest()
    assert unseal(blob, k) == data


class FailingHasher:
    """A digest that fails on its ``fail_at``-th update, as a full disk or a bug would."""

    def __init__(self, fail_at: int) -> None:
        self.updates, self.fail_at = 0, fail_at

    def update(self, data: bytes | memoryview, /) -> None:
        self.updates += 1
        if self.updates == self.fail_at:
            raise OSError("no space left on device")


def _seal_lanes() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("trustline-seal-")]


@pytest.mark.parametrize("fault", ["source shrinks in a later run", "digest fails"])
def test_an_error_in_any_lane_stops_every_lane_and_is_raised(tmp_path: Path, fault: str) -> None:
    """The runs of a file are sealed by several lanes at once: whichever lane meets the error,
    the caller gets it, and no lane is left running or waiting for its turn at the digest."""
    k = key()
    runs = 4 * max(2, fmt.WORKERS)
    size = fmt.RUN_BYTES * runs
    src, dst = tmp_path / "in.wav", tmp_path / "out.tlrec"
    src.write_bytes(secrets.token_bytes(size))
    announced, hasher = size, None
    if fault == "digest fails":
        hasher = FailingHasher(fail_at=3)  # the header, run 0, then run 1 (another lane's)
    else:
        announced = size + fmt.RUN_BYTES  # the last run finds the file shorter than announced
    with open(src, "rb") as s, open(dst, "wb") as d:
        with pytest.raises((fmt.SourceChanged, OSError)) as raised:
            fmt.encrypt_file(s.fileno(), d.fileno(), k, announced, hasher=hasher)
    if fault == "digest fails":
        assert "no space left" in str(raised.value)
        assert hasher is not None and hasher.updates == 3  # nobody hashed after the failure
    else:
        assert isinstance(raised.value, fmt.SourceChanged) and "shrank" in str(raised.value)
    assert _seal_lanes() == []


@pytest.mark.parametrize("size", [0, 1, SMALL_CHUNK, SMALL_CHUNK + 1, 9 * SMALL_CHUNK - 1])
def test_parallel_file_sealing_opens_to_the_same_audio_at_every_size(
    tmp_path: Path, size: int
) -> None:
    """Buffers are reused between chunks: an empty file, a single chunk, exact and odd
    multiples of the chunk size all open to exactly what was sealed."""
    k = key()
    data = secrets.token_bytes(size)
    src, dst = tmp_path / "in.wav", tmp_path / "out.tlrec"
    src.write_bytes(data)
    digest = hashlib.sha256()
    with open(src, "rb") as s, open(dst, "wb") as d:
        fmt.encrypt_file(s.fileno(), d.fileno(), k, size, chunk_size=SMALL_CHUNK, hasher=digest)
    blob = dst.read_bytes()
    assert unseal(blob, k) == data
    assert digest.hexdigest() == hashlib.sha256(blob).hexdigest()
