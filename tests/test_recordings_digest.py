"""A row keeps a BLAKE3 digest of its sealed file; a row from before holds SHA-256 and still
proves its file: verify, decrypt, re-wrap and a crash's adoption read it as it is."""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import blake3
import pytest

from agent.clock import FrozenClock
from agent.errors import RecordingError
from agent.recordings.keyring import rotate_keyring
from agent.settings import Settings, load_settings
from agent.store import Database, open_database
from tests.test_recordings_service import keyring, put, service


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "monitor").mkdir()
    return load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        keyring=str(tmp_path / "data" / "keyring"),
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


async def test_a_new_row_holds_the_blake3_of_its_sealed_file(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"A" * 70_000)
    await svc.sweep()
    [row] = await svc.listing()
    assert row.sha256 == b3(row.path)
    assert row.sha256 != "blake3:" + blake3.blake3(b"A" * 70_000).hexdigest()  # the sealed bytes


async def test_a_sha256_row_from_before_still_proves_its_file_and_catches_a_swap(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"A" * 5000)
    put(settings, "1795000000.2.wav", b"B" * 5000)
    await svc.sweep()
    a, b = sorted(await svc.listing(), key=lambda r: r.id)
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


async def test_rewrap_moves_a_sha256_row_to_blake3(
    settings: Settings, db: Database, clock: FrozenClock
) -> None:
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"A" * 5000)
    await svc.sweep()
    [row] = await svc.listing()
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
    keyring(settings)
    svc = service(settings, db, clock)
    put(settings, "1795000000.1.wav", b"A" * 5000)
    await svc.sweep()
    [row] = await svc.listing()
    await as_before(db, row.id, row.path)
    plain = put(settings, "1795000000.1.wav", b"A" * 5000)  # the plaintext the crash left
    await svc.sweep()
    assert not plain.exists()
    assert [(r.id, r.path, r.sha256) for r in await svc.listing(include_purged=True)] == [
        (row.id, row.path, b3(row.path))
    ]
    assert [a.action for a in await svc.audit(row.id)] == []
