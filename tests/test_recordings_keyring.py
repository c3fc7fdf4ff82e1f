"""The keyring file: created 0600, refused when unsafe (mode, owner, link, folder), rotated."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.errors import KeyringError
from agent.recordings.keyring import check_location, init_keyring, load_keyring, rotate_keyring

NOW = 1_795_344_922.0


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    return folder / "keyring"


def secrets_in(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    out = []
    for entry in doc["keys"]:
        raw = base64.b64decode(entry["key"])
        out += [entry["key"], raw.hex()]
    return out


def test_init_creates_an_owner_only_keyring_with_one_active_key(ring_path: Path) -> None:
    ring = init_keyring(ring_path, NOW)
    st = ring_path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert list(ring.keys) == [ring.active_id]
    assert ring.active_id.startswith("k20261122-")
    assert load_keyring(ring_path).active.secret == ring.active.secret
    # No temp left; the writers' lock file stays (empty) beside the keyring.
    assert sorted(p.name for p in ring_path.parent.iterdir()) == [".keyring.lock", "keyring"]
    assert (ring_path.parent / ".keyring.lock").stat().st_size == 0


def test_init_never_overwrites(ring_path: Path) -> None:
    init_keyring(ring_path, NOW)
    before = ring_path.read_bytes()
    with pytest.raises(KeyringError, match=r"already exists; use `trustline keys rotate`"):
        init_keyring(ring_path, NOW)
    assert ring_path.read_bytes() == before


def test_missing_keyring_says_how_to_create_one(ring_path: Path) -> None:
    with pytest.raises(KeyringError, match=r"does not exist; create it with `trustline keys init`"):
        load_keyring(ring_path)
    assert not ring_path.exists()


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o666])
def test_keyring_readable_by_others_is_refused(ring_path: Path, mode: int) -> None:
    init_keyring(ring_path, NOW)
    ring_path.chmod(mode)
    with pytest.raises(KeyringError) as info:
        load_keyring(ring_path)
    assert f"mode {mode:04o}" in str(info.value)
    assert "0600 or stricter" in str(info.value) and "chmod 600" in str(info.value)


def test_stricter_modes_are_accepted(ring_path: Path) -> None:
    init_keyring(ring_path, NOW)
    ring_path.chmod(0o400)
    assert load_keyring(ring_path).active_id


def test_keyring_owned_by_someone_else_is_refused(ring_path: Path) -> None:
    # Needs to be able to give a file away: the suite runs as root in CI.
    assert os.geteuid() == 0, "ownership test needs root to chown"
    init_keyring(ring_path, NOW)
    os.chown(ring_path, 65534, 65534)
    with pytest.raises(KeyringError, match=r"owned by uid 65534, not by this process's user"):
        load_keyring(ring_path)


def test_symlinked_keyring_is_refused(ring_path: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    init_keyring(real, NOW)
    ring_path.symlink_to(real)
    with pytest.raises(KeyringError, match="symbolic link"):
        load_keyring(ring_path)


def test_keyring_in_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    init_keyring(folder / "keyring", NOW)
    folder.chmod(0o777)
    with pytest.raises(KeyringError, match="writable by everyone"):
        load_keyring(folder / "keyring")


def test_damaged_keyring_errors_never_quote_the_keys(ring_path: Path) -> None:
    init_keyring(ring_path, NOW)
    secrets = secrets_in(ring_path)
    doc = json.loads(ring_path.read_text())
    doc["keys"][0]["key"] = doc["keys"][0]["key"][:-4]  # no longer 32 bytes
    ring_path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError) as info:
        load_keyring(ring_path)
    assert "key entry 0 is invalid" in str(info.value)
    ring_path.write_text(ring_path.read_text()[:-3])  # broken JSON
    with pytest.raises(KeyringError) as info2:
        load_keyring(ring_path)
    for text in (str(info.value), str(info2.value), repr(info.value)):
        assert not any(s in text or s[:12] in text for s in secrets)


def test_rotate_adds_an_active_key_and_keeps_the_old_ones(ring_path: Path) -> None:
    first = init_keyring(ring_path, NOW)
    second = rotate_keyring(ring_path, NOW + 86400)
    assert second.active_id != first.active_id
    assert set(second.keys) == {first.active_id, second.active_id}
    again = load_keyring(ring_path)
    assert again.active_id == second.active_id
    assert again.keys[first.active_id].secret == first.active.secret
    assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600


def test_rotate_refuses_an_unsafe_keyring(ring_path: Path) -> None:
    init_keyring(ring_path, NOW)
    ring_path.chmod(0o644)
    with pytest.raises(KeyringError, match="mode 0644"):
        rotate_keyring(ring_path, NOW)


def test_keys_must_not_sit_beside_the_recordings(tmp_path: Path) -> None:
    rec = tmp_path / "monitor"
    rec.mkdir()
    with pytest.raises(KeyringError, match="inside the recordings folder"):
        check_location(rec / "keyring", rec)
    check_location(tmp_path / "data" / "keyring", rec)


_ROTATE = """
import sys, time
from pathlib import Path
from agent.recordings.keyring import rotate_keyring
for _ in range(int(sys.argv[2])):
    rotate_keyring(Path(sys.argv[1]), time.time())
"""


def test_concurrent_rotations_keep_every_key(ring_path: Path) -> None:
    # Two admins (or a cron job and an admin) rotating at once: each read-add-replace runs
    # under the writers' lock, so no new key is dropped by the other's replace.
    init_keyring(ring_path, NOW)
    rounds, workers = 25, 3
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", _ROTATE, str(ring_path), str(rounds)], env=env)
        for _ in range(workers)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * workers
    ring = load_keyring(ring_path)
    assert len(ring.keys) == 1 + rounds * workers


def test_a_rotation_waits_for_the_lock_then_keeps_keys_written_meanwhile(ring_path: Path) -> None:
    # Someone rewrote the keyring by hand (no lock) while a rotation was under way: the
    # rotation must not replace it with a copy that lacks the new key.
    init_keyring(ring_path, NOW)
    lock = ring_path.with_name(".keyring.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "locked"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    rotation = subprocess.Popen(
        [sys.executable, "-c", _ROTATE, str(ring_path), "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    assert rotation.poll() is None  # waits for the lock: nothing read yet
    # The hand edit (a key added by another tool that ignores the lock)...
    doc = json.loads(ring_path.read_text())
    doc["keys"].append(
        {"id": "khand-added", "created": NOW, "key": base64.b64encode(os.urandom(32)).decode()}
    )
    ring_path.write_text(json.dumps(doc))
    holder.stdin.close()
    holder.wait(timeout=10)
    assert rotation.wait(timeout=60) == 0  # read after the edit: the key is kept
    assert "khand-added" in load_keyring(ring_path).keys
    assert holder.stdout.read() == ""
    holder.stdout.close()
    assert rotation.stderr is not None
    rotation.stderr.close()


def test_a_fifo_at_the_keyring_path_is_refused_without_hanging(tmp_path: Path) -> None:
    # open() on a FIFO waits for a writer; the agent would hang (and the event loop with it).
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    os.mkfifo(folder / "keyring", 0o600)
    (tmp_path / "monitor").mkdir()
    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from agent.errors import KeyringError\n"
        "from agent.recordings.keyring import load_keyring\n"
        "from agent.clock import SystemClock\n"
        "from agent.recordings import RecordingsService\n"
        "from agent.settings import load_settings\n"
        "from agent.store import open_database\n"
        "try:\n"
        "    load_keyring(Path(sys.argv[1]))\n"
        "except KeyringError as exc:\n"
        "    print(exc)\n"
        "async def main():\n"
        "    s = load_settings()\n"
        "    db = await open_database(s.database_path)\n"
        "    report = await RecordingsService(s, db, SystemClock()).sweep()\n"
        "    print(report.problem)\n"
        "    await db.close()\n"
        "asyncio.run(main())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        TRUSTLINE_DATA_DIR=str(folder),
        TRUSTLINE_RECORDINGS_DIR=str(tmp_path / "monitor"),
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(folder / "keyring")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out
    assert all("is not a regular file" in line for line in lines)
