"""RecordingsService on a real folder and a real SQLite store: seal, sweep, retention, audit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import blake3
import pytest

from agent.clock import FrozenClock
from agent.errors import BadRequest, KeyringError, RecordingError
from agent.recordings import RecordingsService, pipeline
from agent.recordings import format as fmt
from agent.recordings.keyring import init_keyring, rotate_keyring
from agent.recordings.repo import RecordingRow
from agent.settings import Settings, load_settings
from agent.store import Database, open_database
from tests.captures import MIXMONITOR_WAV
from tests.fake_proc import proc_view

CAPTURE = MIXMONITOR_WAV
UID = "1795344922.29"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "monitor").mkdir()
    return load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        keyring=str(tmp_path / "data" / "keyring"),
        retention_days=30,
        # These tests are not about seeing who writes a file (the visibility tests are): a
        # file nobody holds open (as far as they can see) is ready once settled.
        recordings_quiet_seconds=0.001,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = await open_database(settings.database_path)
    yield database
    await database.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(time.time())


def service(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    *,
    proc: Path = Path("/proc"),
    **kw: float,
) -> RecordingsService:
    kw.setdefault("settle_seconds", 0.0)
    kw.setdefault("poll_seconds", 0.02)
    return RecordingsService(settings, db, clock, proc=proc, **kw)  # type: ignore[arg-type]  # timing overrides


def put(settings: Settings, name: str, data: bytes | None = None) -> Path:
    path = settings.recordings_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(CAPTURE.read_bytes() if data is None else data)
    # A finished recording, last written a minute ago: whether a sweep finds it settled must
    # not depend on how fast this machine gets from here to the sweep.
    written = time.time() - 60
    os.utime(path, (written, written))
    return path


def flip(path: str | Path, offset: int, bit: int = 1) -> None:
    blob = bytearray(Path(path).read_bytes())
    blob[offset] ^= bit
    Path(path).write_bytes(bytes(blob))


def header_and_body(path: str) -> tuple[fmt.Header, bytes]:
    blob = Path(path).read_bytes()
    with open(path, "rb") as f:
        header = fmt.read_header(f, len(blob))
    return header, blob[header.encoded_len :]


def overwrite(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)


def b3(path: str | Path) -> str:
    return "blake3:" + blake3.blake3(Path(path).read_bytes()).hexdigest()


def sha256_of(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def swap(a: str, b: str) -> None:
    a_bytes = Path(a).read_bytes()
    Path(a).write_bytes(Path(b).read_bytes())
    Path(b).write_bytes(a_bytes)


async def as_before(db: Database, row_id: int, path: str) -> str:
    """Give a row the SHA-256 an earlier version stored for its file."""
    digest = sha256_of(path)
    await db.execute("UPDATE recordings SET sha256 = ? WHERE id = ?", (digest, row_id))
    return digest


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# Opens the file as root (Asterisk's spool is its own), then runs as another user, as
# Asterisk does: MixMonitor keeps the file open until the recording ends (stdin closes).
_HOLDER = """
import os, sys
f = open(sys.argv[1], "ab")
os.setgid(65534)
os.setuid(65534)
print("open", flush=True)
sys.stdin.read()
"""


class FakeMixMonitor:
    """Another user's process holding a recording open: what Asterisk looks like in /proc."""

    def __init__(self, path: Path) -> None:
        assert os.geteuid() == 0, "needs root to run the fake Asterisk as another user"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "open"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            assert self.proc.stdout is not None
            self.proc.stdout.close()


@pytest.fixture
def mixmonitor() -> Iterator[list[FakeMixMonitor]]:
    started: list[FakeMixMonitor] = []
    yield started
    for m in started:
        m.close()


def hold_open(started: list[FakeMixMonitor], path: Path) -> FakeMixMonitor:
    m = FakeMixMonitor(path)
    started.append(m)
    return m


def keyring(settings: Settings) -> None:
    init_keyring(settings.keyring_path, time.time())


async def test_recording_complete_seals_then_removes_the_plaintext(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav")
    svc = service(settings, db, clock)
    await svc.on_recording_complete(UID, f"{UID}.wav")
    await svc.wait_idle()
    sealed = settings.recordings_dir / f"{UID}.wav.tlrec"
    assert not plain.exists() and sealed.exists()
    assert sealed.stat().st_mode & 0o777 == 0o600
    [row] = await svc.listing()
    assert row.uniqueid == UID
    assert row.plain_size == len(CAPTURE.read_bytes())
    assert row.size == sealed.stat().st_size
    assert row.sha256 == "blake3:" + blake3.blake3(sealed.read_bytes()).hexdigest()
    assert row.key_id == svc.readiness()[1].rsplit(" ", 1)[1]
    assert row.source_name == f"{UID}.wav"
    out = settings.data_dir / "out.wav"
    await svc.decrypt(row.id, out, operator="alice", reason="patient complaint 42")
    assert out.read_bytes() == CAPTURE.read_bytes()
    assert (await svc.verify())[0].problem is None


async def test_absolute_filename_inside_the_folder_and_one_outside(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    keyring(settings)
    inside = put(settings, f"2026/11/{UID}.wav")
    outside = tmp_path / "elsewhere.wav"
    outside.write_bytes(b"RIFF....")
    svc = service(settings, db, clock)
    await svc.on_recording_complete(UID, str(inside))
    await svc.on_recording_complete("1795344922.30", str(outside))
    await svc.on_recording_complete("1795344922.31", "../elsewhere.wav")
    await svc.wait_idle()
    assert not inside.exists() and inside.with_name(inside.name + ".tlrec").exists()
    assert outside.read_bytes() == b"RIFF...."
    assert "outside" in caplog.text


async def test_file_held_open_by_mixmonitor_is_left_until_closed(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    tmp_path: Path,
    mixmonitor: list[FakeMixMonitor],
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav")
    writer = hold_open(mixmonitor, plain)
    svc = service(settings, db, clock, proc=proc_view(tmp_path, os.getpid(), writer.pid))
    await svc.on_recording_complete(UID, f"{UID}.wav")
    await asyncio.sleep(0.3)
    assert plain.exists() and not plain.with_name(plain.name + ".tlrec").exists()
    append(plain, b"\x00\x01" * 100)
    writer.close()
    await svc.wait_idle()
    [row] = await svc.listing()
    assert row.plain_size == len(CAPTURE.read_bytes()) + 200
    assert not plain.exists()


async def test_growing_file_is_sealed_only_once_it_stops_changing(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav", b"")
    svc = service(settings, db, clock, settle_seconds=0.4)
    await svc.on_recording_complete(UID, f"{UID}.wav")
    for _ in range(8):  # written in bursts, closed in between: only its size tells
        append(plain, b"\x10" * 1000)
        await asyncio.sleep(0.1)
        assert plain.exists()
    await svc.wait_idle()
    [row] = await svc.listing()
    assert row.plain_size == 8000


async def test_missing_keyring_is_reported_and_plaintext_left_alone(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    plain = put(settings, f"{UID}.wav")
    svc = service(settings, db, clock)
    ok, why = svc.readiness()
    assert not ok and "keys init" in why
    with caplog.at_level(logging.ERROR):
        await svc.start()
        await svc.on_recording_complete(UID, f"{UID}.wav")
        await svc.wait_idle()
        report = await svc.sweep()
        await svc.stop()
    assert report.problem and "does not exist" in report.problem
    assert "trustline keys init" in caplog.text and "stay in plaintext" in caplog.text
    assert plain.read_bytes() == CAPTURE.read_bytes()
    assert not settings.keyring_path.exists()  # never created behind the sysadmin's back
    assert await svc.listing() == []


async def test_missing_folder_is_a_warning_not_a_failure(
    tmp_path: Path, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    s = load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "nowhere"),
        keyring=str(tmp_path / "data" / "keyring"),
    )
    init_keyring(s.keyring_path, time.time())
    database = await open_database(s.database_path)
    try:
        svc = service(s, database, clock)
        with caplog.at_level(logging.WARNING):
            await svc.start()
            report = await svc.sweep()
            await svc.stop()
        assert svc.readiness()[0]
        assert "does not exist" in caplog.text
        assert report.problem and "does not exist" in report.problem
    finally:
        await database.close()


async def test_startup_sweep_seals_what_was_recorded_while_down(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    names = [f"{UID}.wav", "2026/11/22/out-1001-1795344999.3.wav", "1795345000.1.WAV"]
    for i, name in enumerate(names):
        put(settings, name, CAPTURE.read_bytes()[: 10000 * (i + 1)])
    notes = put(settings, "README.txt", b"not audio")
    leftover = put(settings, f".{UID}.wav.abcd1234.tlrec-tmp", b"half a file")
    svc = service(settings, db, clock)
    report = await svc.sweep()
    assert (report.sealed, report.failed, report.temps_removed) == (3, 0, 1)
    assert not leftover.exists() and notes.exists()
    rows = await svc.listing()
    assert sorted(r.uniqueid or "" for r in rows) == sorted([UID, "1795344999.3", "1795345000.1"])
    for name in names:
        assert not (settings.recordings_dir / name).exists()
    for r in rows:
        out = settings.data_dir / f"{r.id}.out"
        await svc.decrypt(r.id, out, operator="ops", reason="check")
        assert out.read_bytes() == CAPTURE.read_bytes()[: r.plain_size]
    assert (await svc.sweep()).sealed == 0


async def test_sealed_file_without_metadata_is_verified_and_recorded(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    await db.execute("DELETE FROM recordings")
    report = await svc.sweep()
    assert report.adopted == 1
    [row] = await svc.listing()
    assert row.uniqueid == UID


async def test_start_and_stop_run_the_sweep_in_the_background(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    put(settings, f"{UID}.wav")
    svc = service(settings, db, clock)
    await svc.start()
    for _ in range(100):
        if await svc.listing():
            break
        await asyncio.sleep(0.02)
    await svc.stop()
    assert len(await svc.listing()) == 1
    assert svc.readiness() == (True, svc.readiness()[1])


async def test_retention_deletes_old_recordings_and_records_what_it_deleted(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    old = put(settings, "1795000000.1.wav")
    new = put(settings, "1795000000.2.wav")
    recorded = time.time() - 40 * 86400
    os.utime(old, (recorded, recorded))
    await svc.sweep()
    assert await svc.purge_expired(dry_run=True)
    purged = await svc.purge_expired()
    assert [r.uniqueid for r in purged] == ["1795000000.1"]
    assert not old.with_name(old.name + ".tlrec").exists()
    assert new.with_name(new.name + ".tlrec").exists()
    [audit] = await svc.audit(purged[0].id)
    assert (audit.action, audit.operator, audit.outcome) == ("purge", "retention", "ok")
    assert "30 days" in audit.reason
    assert audit.detail["uniqueid"] == "1795000000.1"
    assert audit.detail["sha256"] == purged[0].sha256
    assert audit.detail["path"].endswith("1795000000.1.wav.tlrec")
    assert [r.uniqueid for r in await svc.listing()] == ["1795000000.2"]
    assert len(await svc.listing(include_purged=True)) == 2
    with pytest.raises(RecordingError, match="deleted by retention"):
        await svc.decrypt(purged[0].id, settings.data_dir / "x", operator="a", reason="b")
    clock.advance(31 * 86400)
    assert [r.uniqueid for r in await svc.purge_expired(operator="cli:root")] == ["1795000000.2"]
    assert (await svc.audit())[-1].operator == "cli:root"


async def test_decrypt_needs_operator_and_reason_and_is_audited(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    [row] = await svc.listing()
    out = settings.data_dir / "listen.wav"
    with pytest.raises(BadRequest, match="operator"):
        await svc.decrypt(row.id, out, operator=" ", reason="x")
    with pytest.raises(BadRequest, match="reason"):
        await svc.decrypt(row.id, out, operator="alice", reason="")
    with pytest.raises(BadRequest, match="inside the recordings folder"):
        await svc.decrypt(row.id, settings.recordings_dir / "x.wav", operator="a", reason="b")
    with pytest.raises(BadRequest, match="no recording with ID 99"):
        await svc.decrypt(99, out, operator="alice", reason="x")
    assert await svc.audit() == []
    await svc.decrypt(row.id, out, operator="alice", reason="complaint 42")
    [audit] = await svc.audit(row.id)
    assert (audit.action, audit.operator, audit.reason, audit.outcome) == (
        "decrypt",
        "alice",
        "complaint 42",
        "ok",
    )
    assert audit.at == clock.now() and audit.detail["out"] == str(out)
    with pytest.raises(RecordingError, match="already exists"):
        await svc.decrypt(row.id, out, operator="alice", reason="again")
    assert [a.outcome for a in await svc.audit(row.id)] == ["ok", "failed: RecordingError"]


async def test_decrypt_of_a_tampered_file_fails_audited_and_leaves_no_audio(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    [row] = await svc.listing()
    flip(row.path, -5, 0x80)
    out = settings.data_dir / "listen.wav"
    with pytest.raises(fmt.ChunkTampered):
        await svc.decrypt(row.id, out, operator="alice", reason="x")
    assert not out.exists() and list(settings.data_dir.glob("*.part")) == []
    assert [a.outcome for a in await svc.audit(row.id)] == ["failed: ChunkTampered"]
    [result] = await svc.verify()
    assert result.problem and "failed authentication" in result.problem


@pytest.mark.parametrize("rows", ["blake3", "sha256 from before"])
async def test_swapped_recordings_are_caught_by_their_metadata(
    settings: Settings, db: Database, clock: FrozenClock, rows: str
) -> None:
    """Rows as this version writes them, and rows an earlier version wrote (SHA-256): each
    proves its own file, and two files swapped are refused."""
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"A" * 5000)
    put(settings, "1795000000.2.wav", b"B" * 5000)
    await svc.sweep()
    a, b = sorted(await svc.listing(), key=lambda r: r.id)
    if rows != "blake3":
        for row in (a, b):
            await as_before(db, row.id, row.path)
    assert [r.problem for r in await svc.verify()] == [None, None]
    out = settings.data_dir / "a.wav"
    await svc.decrypt(a.id, out, operator="alice", reason="callback")
    assert out.read_bytes() == b"A" * 5000

    swap(a.path, b.path)
    problems = [r.problem for r in await svc.verify()]
    assert all(p and "digest differs" in p for p in problems)
    swapped = settings.data_dir / "swapped.wav"
    with pytest.raises(RecordingError, match="digest differs"):
        await svc.decrypt(a.id, swapped, operator="alice", reason="callback")
    assert not swapped.exists()


async def test_rotation_then_rewrap_moves_every_file_to_the_new_key_without_touching_audio(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    for i in range(3):
        put(settings, f"1795000000.{i}.wav", CAPTURE.read_bytes()[i * 1000 :])
    await svc.sweep()
    rows = await svc.listing()
    bodies = {}
    for r in rows:
        bodies[r.id] = header_and_body(r.path)[1]
    ring = rotate_keyring(settings.keyring_path, time.time())
    steps: list[tuple[int, int]] = []
    report = await svc.rewrap(lambda done, total: steps.append((done, total)))
    assert (report.total, report.rewrapped, report.failures) == (3, 3, [])
    assert steps == [(1, 3), (2, 3), (3, 3)]
    for r in await svc.listing():
        header, body = header_and_body(r.path)
        assert r.key_id == header.key_id == ring.active_id
        assert body == bodies[r.id]  # audio chunks byte-identical
        assert r.sha256 == "blake3:" + blake3.blake3(header.encode() + body).hexdigest()
    assert (await svc.rewrap()).total == 0
    # The old key can now leave the keyring: everything opens with the new key alone.
    doc = json.loads(settings.keyring_path.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["id"] == ring.active_id]
    settings.keyring_path.write_text(json.dumps(doc))
    assert [v.problem for v in await svc.verify()] == [None, None, None]
    out = settings.data_dir / "o.wav"
    await svc.decrypt(rows[-1].id, out, operator="a", reason="b")
    assert out.read_bytes() == CAPTURE.read_bytes()


async def test_unsafe_keyring_blocks_sealing_with_a_clear_message(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    keyring(settings)
    settings.keyring_path.chmod(0o644)
    plain = put(settings, f"{UID}.wav")
    svc = service(settings, db, clock)
    ok, why = svc.readiness()
    assert not ok and "mode 0644" in why
    with caplog.at_level(logging.ERROR):
        await svc.on_recording_complete(UID, f"{UID}.wav")
        await svc.wait_idle()
    assert "mode 0644" in caplog.text
    assert plain.exists()
    with pytest.raises(KeyringError):
        await svc.verify()


async def test_keys_and_audio_never_reach_logs_or_the_database(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    keyring(settings)
    rotate_keyring(settings.keyring_path, time.time())
    svc = service(settings, db, clock)
    with caplog.at_level(logging.DEBUG):
        put(settings, f"{UID}.wav")
        put(settings, "1795000000.5.wav")
        await svc.start()
        await svc.on_recording_complete("1795000000.5", "1795000000.5.wav")
        await svc.wait_idle()
        await svc.sweep()
        row = (await svc.listing())[0]
        await svc.decrypt(row.id, settings.data_dir / "o.wav", operator="a", reason="b")
        rotate_keyring(settings.keyring_path, time.time())
        await svc.rewrap()
        flip(row.path, -1)
        await svc.verify()
        await svc.stop()
    doc = json.loads(settings.keyring_path.read_text())
    secrets = []
    for k in doc["keys"]:
        secrets += [k["key"], base64.b64decode(k["key"]).hex()]
    conn = sqlite3.connect(settings.database_path)
    dump = "\n".join(conn.iterdump())
    conn.close()
    for s in secrets:
        for text in (caplog.text, dump):
            assert s not in text and s[:12] not in text
    assert "RIFF" not in caplog.text and "RIFF" not in dump


async def test_sweep_waits_for_a_recording_still_being_written_at_startup(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    tmp_path: Path,
    mixmonitor: list[FakeMixMonitor],
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav")
    writer = hold_open(mixmonitor, plain)
    svc = service(settings, db, clock, proc=proc_view(tmp_path, os.getpid(), writer.pid))
    report = await svc.sweep()
    assert (report.sealed, report.busy) == (0, 1)
    await asyncio.sleep(0.2)
    assert plain.exists()
    writer.close()
    await svc.wait_idle()
    assert not plain.exists()
    [row] = await svc.listing()
    assert row.uniqueid == UID


async def test_stop_lets_the_file_being_sealed_finish(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav", os.urandom(64 * 2**20))
    svc = service(settings, db, clock)
    await svc.on_recording_complete(UID, f"{UID}.wav")
    for _ in range(500):
        if any(p.name.endswith(".tlrec-tmp") for p in settings.recordings_dir.iterdir()):
            break
        await asyncio.sleep(0.002)
    await svc.stop()
    assert not plain.exists()
    [row] = await svc.listing()
    assert row.plain_size == 64 * 2**20
    names = [p.name for p in settings.recordings_dir.iterdir() if p.name != pipeline.LOCK_NAME]
    assert names == [f"{UID}.wav.tlrec"]
    await svc.on_recording_complete("1795344922.30", "1795344922.30.wav")  # ignored once stopped
    await svc.wait_idle()


@pytest.mark.parametrize("damage", ["cut", "first chunk", "last chunk"])
async def test_a_sealed_file_damaged_on_its_way_to_disk_never_costs_the_plaintext(
    settings: Settings,
    db: Database,
    clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:
    """Sealing does not read its output back in full (FORMAT.md, "Sealing"): a disk that
    loses the end of the file, or garbles its first or last chunk, while fsync reports
    success must still be caught before the plaintext goes."""
    keyring(settings)
    audio = os.urandom(3 * fmt.DEFAULT_CHUNK + 1000)
    plain = put(settings, f"{UID}.wav", audio)
    real_fsync = os.fsync

    def lossy_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.endswith(pipeline.TEMP_MARK):
            size = os.fstat(fd).st_size
            if damage == "cut":
                os.ftruncate(fd, size - 100)
            else:
                flip(path, 200 if damage == "first chunk" else size - 5, 0x10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", lossy_fsync)
    svc = service(settings, db, clock)
    report = await svc.sweep()
    assert (report.sealed, report.failed) == (0, 1)
    assert plain.read_bytes() == audio
    assert await svc.listing() == []
    # The disk is healthy again: the damaged file is moved aside, never trusted or deleted,
    # and the recording sealed from its plaintext.
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (await svc.sweep()).sealed == 1 and not plain.exists()
    rows = sorted(await svc.listing(), key=lambda r: r.id)
    assert [r.state for r in rows] == ["rejected", "sealed"]
    out = settings.data_dir / "o.wav"
    await svc.decrypt(rows[1].id, out, operator="a", reason="b")
    assert out.read_bytes() == audio


async def test_leftover_sealed_file_that_does_not_open_is_set_aside_never_deleted(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    keyring(settings)
    plain = put(settings, f"{UID}.wav")
    bogus = put(settings, f"{UID}.wav.tlrec", b"\x89TLREC\r\n\x01")  # cut inside the header
    svc = service(settings, db, clock)
    with caplog.at_level(logging.WARNING):
        report = await svc.sweep()
    assert report.sealed == 1 and not plain.exists()
    aside = [p for p in settings.recordings_dir.iterdir() if p.name.endswith("tlrec-rejected")]
    assert len(aside) == 1 and aside[0].read_bytes() == b"\x89TLREC\r\n\x01"
    assert "moved aside" in caplog.text
    [sealed] = [r for r in await svc.listing() if r.state == "sealed"]
    out = settings.data_dir / "o.wav"
    await svc.decrypt(sealed.id, out, operator="a", reason="b")
    assert out.read_bytes() == CAPTURE.read_bytes() and bogus.exists()


async def test_set_aside_files_get_unique_names_are_listed_and_aged_out_by_retention(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav", b"first call")
    await svc.sweep()
    [first] = await svc.listing()
    # The first recording's file is damaged; twice in the same second, the same name comes
    # back with a damaged sealed file beside it: every damaged file is kept, none overwritten.
    overwrite(first.path, b"\x89TLREC\r\n\x01 damaged one")
    put(settings, f"{UID}.wav", b"second call")
    await svc.sweep()
    overwrite(first.path, b"\x89TLREC\r\n\x01 damaged two")
    put(settings, f"{UID}.wav", b"third call")
    await svc.sweep()
    asides = sorted(
        p.read_bytes()
        for p in settings.recordings_dir.iterdir()
        if p.name.endswith(".tlrec-rejected")
    )
    assert asides == [b"\x89TLREC\r\n\x01 damaged one", b"\x89TLREC\r\n\x01 damaged two"]
    rows = sorted(await svc.listing(), key=lambda r: r.id)
    assert [r.state for r in rows] == ["rejected", "rejected", "sealed"]
    # The first recording's row followed its file aside (never overwritten by the second).
    assert rows[0].id == first.id and rows[0].path.endswith(".tlrec-rejected")
    assert rows[0].sha256 == first.sha256
    out = settings.data_dir / "third.wav"
    await svc.decrypt(rows[2].id, out, operator="a", reason="b")
    assert out.read_bytes() == b"third call"
    with pytest.raises(RecordingError, match="set aside"):
        await svc.decrypt(rows[0].id, settings.data_dir / "x", operator="a", reason="b")
    set_aside = [a for a in await svc.audit() if a.action == "set_aside"]
    assert [a.recording_id for a in set_aside] == [rows[0].id, rows[1].id]
    assert all(a.detail["to"].endswith(".tlrec-rejected") for a in set_aside)
    assert [v.problem for v in await svc.verify()] == [None]  # the sealed one
    # A set-aside file the store never heard of (a crash before its row) is listed by a sweep.
    stray = settings.recordings_dir / f".{UID}.wav.tlrec.1.abcd.tlrec-rejected"
    stray.write_bytes(b"stray")
    os.utime(stray, (time.time() - 40 * 86400,) * 2)
    assert (await svc.sweep()).rejected == 1
    [found] = [r for r in await svc.listing() if r.path == str(stray)]
    assert (found.state, found.uniqueid, found.source_name) == ("rejected", UID, f"{UID}.wav")
    assert (await svc.get(rows[2].id)).state == "sealed"  # the live recording keeps its row
    # Retention deletes set-aside files like recordings, with an audit row each.
    clock.advance(31 * 86400)
    purged = await svc.purge_expired()
    assert sorted(r.state for r in purged) == ["rejected", "rejected", "rejected", "sealed"]
    assert not any(p.name.endswith(".tlrec-rejected") for p in settings.recordings_dir.iterdir())
    audits = [a for a in await svc.audit() if a.action == "purge"]
    assert len(audits) == 4 and {a.detail["state"] for a in audits} == {"rejected", "sealed"}


async def test_a_different_recording_under_the_same_name_is_sealed_under_a_free_name(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav", b"first call")
    await svc.sweep()
    plain = put(settings, f"{UID}.wav", b"another call, same name")
    with caplog.at_level(logging.WARNING):
        report = await svc.sweep()
    assert (report.sealed, report.failed) == (1, 0)
    assert not plain.exists()  # never left in plaintext
    assert "already holds another recording" in caplog.text
    first, second = sorted(await svc.listing(), key=lambda r: r.id)
    assert first.path.endswith(f"{UID}.wav.tlrec")
    assert second.path.endswith(f"{UID}.wav.2.tlrec") and second.uniqueid == UID
    assert second.source_name == f"{UID}.wav"
    for row, body in ((first, b"first call"), (second, b"another call, same name")):
        out = settings.data_dir / f"{row.id}.wav"
        await svc.decrypt(row.id, out, operator="a", reason="b")
        assert out.read_bytes() == body
    # A crash after sealing X.wav.2.tlrec but before the plaintext went: the next sweep
    # finds it by content, keeps its row, and does not make a third copy.
    put(settings, f"{UID}.wav", b"another call, same name")
    assert (await svc.sweep()).sealed == 1
    assert not (settings.recordings_dir / f"{UID}.wav.3.tlrec").exists()
    assert len(await svc.listing()) == 2
    assert [v.problem for v in await svc.verify()] == [None, None]


async def test_decrypt_names_the_real_problem_with_out_or_the_file(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    [row] = await svc.listing()
    with pytest.raises(BadRequest, match="cannot write"):
        await svc.decrypt(
            row.id, settings.data_dir / "no" / "such" / "o.wav", operator="a", reason="b"
        )
    os.unlink(row.path)
    with pytest.raises(RecordingError, match="file is missing"):
        await svc.decrypt(row.id, settings.data_dir / "o.wav", operator="a", reason="b")
    assert [a.outcome for a in await svc.audit(row.id)] == [
        "failed: FileNotFoundError",
        "failed: FileNotFoundError",
    ]


async def test_rewrap_refuses_another_recording_copied_over_one_under_the_active_key(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"patient-ONE " * 500)
    await svc.sweep()
    rotate_keyring(settings.keyring_path, time.time())
    put(settings, "1795000000.2.wav", b"patient-TWO " * 500)  # sealed under the new key
    await svc.sweep()
    one, two = sorted(await svc.listing(), key=lambda r: r.id)
    assert one.key_id != two.key_id
    shutil.copyfile(two.path, one.path)  # one's file replaced by two's
    report = await svc.rewrap()
    assert report.rewrapped == 0 and "digest differs" in report.failures[0]
    [result] = await svc.verify([one.id])
    assert result.problem and "digest differs" in result.problem
    with pytest.raises(RecordingError, match="digest differs"):
        await svc.decrypt(one.id, settings.data_dir / "o.wav", operator="a", reason="b")
    assert (await svc.get(one.id)).sha256 == one.sha256  # the row was not re-pointed


async def test_a_crash_between_rewrap_and_its_row_update_is_not_tampering(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    [before] = await svc.listing()
    rotate_keyring(settings.keyring_path, time.time())
    await svc.rewrap()
    [after] = await svc.listing()
    # The state a SIGKILL right after the file's replace leaves: the row still describes
    # the old header, and holds the new file's digest as pending.
    await db.execute(
        "UPDATE recordings SET key_id = ?, sha256 = ?, size = ?, pending_sha256 = ? WHERE id = ?",
        (before.key_id, before.sha256, before.size, after.sha256, after.id),
    )
    assert [v.problem for v in await svc.verify()] == [None]
    out = settings.data_dir / "o.wav"
    await svc.decrypt(after.id, out, operator="a", reason="b")
    assert out.read_bytes() == CAPTURE.read_bytes()
    report = await svc.rewrap()  # heals the row
    assert (report.rewrapped, report.failures) == (1, [])
    [healed] = await svc.listing()
    assert (healed.key_id, healed.sha256, healed.pending_sha256) == (
        after.key_id,
        after.sha256,
        None,
    )


async def test_decrypt_audit_records_the_os_login_beside_the_operator(
    settings: Settings, db: Database, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, f"{UID}.wav")
    await svc.sweep()
    [row] = await svc.listing()
    monkeypatch.setenv("SUDO_USER", "alice")
    await svc.decrypt(row.id, settings.data_dir / "o.wav", operator="dr.who", reason="x")
    [audit] = await svc.audit(row.id)
    assert audit.operator == "dr.who"
    import getpass

    assert audit.detail["os_login"] == getpass.getuser()
    assert audit.detail["sudo_user"] == "alice"
    assert audit.detail["euid"] == os.geteuid()


async def test_no_keyring_and_no_recordings_is_a_hint_not_an_error(
    settings: Settings, db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    svc = service(settings, db, clock)
    with caplog.at_level(logging.INFO):
        await svc.start()
        await svc.sweep()
        await svc.stop()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    [hint] = [r.getMessage() for r in caplog.records if "keyring" in r.getMessage()]
    assert "not in use" in hint and "trustline keys init" in hint
    # Once a recording shows up, the missing keyring is an error again: audio is waiting.
    put(settings, f"{UID}.wav")
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        await svc.sweep()
    assert "stay in plaintext" in caplog.text


# -- the digest a row keeps: BLAKE3 now, SHA-256 rows from before read as they are --------


async def one_sealed(
    settings: Settings, db: Database, clock: FrozenClock, data: bytes = b"A" * 5000
) -> tuple[RecordingsService, RecordingRow]:
    """A service with a keyring and one recording of ``data`` sealed and recorded."""
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", data)
    await svc.sweep()
    [row] = await svc.listing()
    return svc, row


async def test_a_new_row_holds_the_blake3_of_its_sealed_file(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    _, row = await one_sealed(settings, db, clock, b"A" * 70_000)
    assert row.sha256 == b3(row.path)
    assert row.sha256 != "blake3:" + blake3.blake3(b"A" * 70_000).hexdigest()  # the sealed bytes


async def test_rewrap_moves_a_sha256_row_to_blake3(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    svc, row = await one_sealed(settings, db, clock)
    old = await as_before(db, row.id, row.path)
    rotate_keyring(settings.keyring_path, time.time())
    assert (await svc.rewrap()).rewrapped == 1
    [after] = await svc.listing()
    assert after.sha256 != old and after.sha256 == b3(after.path)
    assert [r.problem for r in await svc.verify()] == [None]


async def test_a_crash_after_an_earlier_version_wrote_its_row_keeps_that_row(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    """Sealed and recorded by an earlier version, killed before the plaintext went: the file
    is adopted under its row (now naming it in BLAKE3), not taken for another recording."""
    svc, row = await one_sealed(settings, db, clock)
    await as_before(db, row.id, row.path)
    plain = put(settings, "1795000000.1.wav", b"A" * 5000)  # the plaintext the crash left
    await svc.sweep()
    assert not plain.exists()
    assert [(r.id, r.path, r.sha256) for r in await svc.listing(include_purged=True)] == [
        (row.id, row.path, b3(row.path))
    ]
    assert [a.action for a in await svc.audit(row.id)] == []


@pytest.mark.parametrize("stored", ["blake3:é" + "0" * 63, "", "not a digest", "blake3:"])
async def test_a_row_whose_digest_was_garbled_refuses_its_file_with_a_clear_problem(
    settings: Settings, db: Database, clock: FrozenClock, stored: str
) -> None:
    """A row edited by hand (junk, non-ASCII, empty): the file is not released, and verify and
    decrypt say the digest differs rather than failing on the text."""
    svc, row = await one_sealed(settings, db, clock)
    await db.execute("UPDATE recordings SET sha256 = ? WHERE id = ?", (stored, row.id))
    [result] = await svc.verify()
    assert result.problem and "digest differs" in result.problem
    out = settings.data_dir / "out.wav"
    with pytest.raises(RecordingError, match="digest differs"):
        await svc.decrypt(row.id, out, operator="alice", reason="callback")
    assert not out.exists()
