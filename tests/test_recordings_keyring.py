"""The keyring file: created 0600, refused when unsafe (mode, owner, link, folder), rotated."""

from __future__ import annotations

import base64
import json
import os
import stat
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
    assert [p.name for p in ring_path.parent.iterdir()] == ["keyring"]  # no temp left


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
