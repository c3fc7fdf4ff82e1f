"""The recordings keyring: one file the sysadmin owns, holding key-encryption keys by id.

May: check the file's type, owner and mode before reading a byte of it, parse it, create it
(``keys init``) and add an active key (``keys rotate``) with crash-safe writes at mode 0600,
serialised across processes by an flock on ``.<name>.lock`` beside the keyring.
Must not: log, put key bytes (or anything derived from them but the key check value inside
sealed headers) into messages, the database or ``repr``; create a keyring implicitly.

File layout (JSON, one object): ``{"format": "trustline-keyring", "version": 1,
"active": "<key id>", "keys": [{"id": ..., "created": <epoch s>, "key": "<base64, 32 bytes>"}]}``.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.clock import utc
from agent.errors import KeyringError
from agent.recordings.format import KEY_BYTES, SealingKey

_FORMAT = "trustline-keyring"
_VERSION = 1
# A keyring is a few hundred bytes per key; anything far larger is not ours.
_MAX_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Keyring:
    path: Path
    active_id: str
    keys: Mapping[str, SealingKey]

    @property
    def active(self) -> SealingKey:
        return self.keys[self.active_id]


def load_keyring(path: Path) -> Keyring:
    """Read the keyring, refusing it unless it is a regular file of ours with mode 0600 or less."""
    try:
        # O_NONBLOCK: a FIFO (or a device) at the keyring path must be refused, not waited on;
        # it changes nothing for the regular file we accept.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyringError(
            f"keyring {path} does not exist; create it with `trustline keys init`"
        ) from None
    except OSError as exc:
        if os.path.islink(path):
            raise KeyringError(
                f"keyring {path} is a symbolic link; refusing it (point TRUSTLINE_KEYRING at the"
                " real file)"
            ) from None
        raise KeyringError(f"keyring {path} cannot be opened: {exc.strerror}") from None
    try:
        # fstat on the opened descriptor: the file we check is the file we read.
        st = os.fstat(fd)
        _check_safe(path, st)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(_MAX_SIZE + 1)
    finally:
        os.close(fd)
    return _parse(path, raw)


def _check_safe(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyringError(f"keyring {path} is not a regular file; refusing it")
    if st.st_uid != os.geteuid():
        raise KeyringError(
            f"keyring {path} is owned by uid {st.st_uid}, not by this process's user"
            f" (uid {os.geteuid()}); refusing it (chown it to the agent's user)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyringError(
            f"keyring {path} has mode {mode:04o}; it must be 0600 or stricter, refusing it"
            f" (chmod 600 {path})"
        )
    parent = path.parent.stat()
    if parent.st_mode & stat.S_IWOTH and not parent.st_mode & stat.S_ISVTX:
        raise KeyringError(
            f"keyring folder {path.parent} is writable by everyone; anyone could replace the"
            " keyring, refusing it"
        )


def _parse(path: Path, raw: bytes) -> Keyring:
    # Messages name the problem, never quote the content: the content is key material.
    bad = f"keyring {path} is damaged or not a Trustline keyring"
    if len(raw) > _MAX_SIZE:
        raise KeyringError(f"{bad} (too large)")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeyringError(f"{bad} (not JSON)") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise KeyringError(bad)
    if doc.get("version") != _VERSION:
        raise KeyringError(f"keyring {path} has unsupported version {doc.get('version')!r}")
    keys: dict[str, SealingKey] = {}
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise KeyringError(f"{bad} (no keys)")
    for n, entry in enumerate(entries):
        try:
            key_id = str(entry["id"])
            secret = base64.b64decode(entry["key"], validate=True)
            key = SealingKey(key_id, secret, float(entry.get("created", 0.0)))
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise KeyringError(f"{bad} (key entry {n} is invalid)") from None
        if key_id in keys:
            raise KeyringError(f"{bad} (key id {key_id!r} appears twice)")
        keys[key_id] = key
    active = doc.get("active")
    if not isinstance(active, str) or active not in keys:
        raise KeyringError(f"{bad} (the active key id names no key)")
    return Keyring(path, active, keys)


def new_key_id(now: float) -> str:
    """Date plus randomness: ids from two keyrings never collide, so a wrong key says so."""
    day = utc(now).strftime("%Y%m%d")
    return f"k{day}-{secrets.token_hex(4)}"


def init_keyring(path: Path, now: float) -> Keyring:
    """Create a keyring with one active key. Refuses to overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _writer_lock(path):
        if path.exists() or path.is_symlink():
            raise KeyringError(
                f"keyring {path} already exists; use `trustline keys rotate` to add a key"
            )
        key = SealingKey(new_key_id(now), secrets.token_bytes(KEY_BYTES), now)
        ring = Keyring(path, key.key_id, {key.key_id: key})
        _write(ring, exclusive=True)
        return ring


def rotate_keyring(path: Path, now: float) -> Keyring:
    """Add a new key and make it active; older keys stay to open what they sealed.

    Read, add, replace under the writers' lock: two rotations at once (two admins, a cron job)
    each keep the other's key. Just before replacing, the file is read again; if any key id
    in it is missing from what we would write (someone edited it without the lock), we refuse
    rather than drop a key that recordings may already be sealed under.
    """
    with _writer_lock(path):
        ring = load_keyring(path)
        key = SealingKey(new_key_id(now), secrets.token_bytes(KEY_BYTES), now)
        new = Keyring(path, key.key_id, {**ring.keys, key.key_id: key})
        _write(new, exclusive=False, keep=lambda: load_keyring(path).keys.keys())
        return new


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on a lock file beside the keyring, shared by every writer process.

    Readers need no lock: the keyring only ever changes by an atomic rename.
    """
    lock = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise KeyringError(f"keyring lock {lock} cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _write(
    ring: Keyring, *, exclusive: bool, keep: Callable[[], Collection[str]] | None = None
) -> None:
    """Write ``ring`` through a temp file; ``keep`` names the key ids that must survive."""
    doc = {
        "format": _FORMAT,
        "version": _VERSION,
        "active": ring.active_id,
        "keys": [
            {
                "id": k.key_id,
                "created": k.created,
                "key": base64.b64encode(k.secret).decode("ascii"),
            }
            for k in ring.keys.values()
        ],
    }
    data = json.dumps(doc, indent=1).encode("utf-8")
    folder = ring.path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{ring.path.name}.{secrets.token_hex(4)}.tmp"
    # Created 0600 from the first byte: never a moment where the keys are readable by others.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            # link() fails if the name exists: two concurrent `keys init` cannot both win.
            try:
                os.link(tmp, ring.path)
            except FileExistsError:
                raise KeyringError(f"keyring {ring.path} already exists") from None
            os.unlink(tmp)
        else:
            if keep is not None:
                vanish = set(keep()) - set(ring.keys)
                if vanish:
                    raise KeyringError(
                        f"keyring {ring.path} changed while it was being rotated (key ids"
                        f" {', '.join(sorted(vanish))} would vanish); nothing written, try again"
                    )
            os.replace(tmp, ring.path)
        fsync_dir(folder)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_location(keyring_path: Path, recordings_dir: Path) -> None:
    """Keys must never sit beside the data they protect."""
    try:
        keyring_path.resolve().relative_to(recordings_dir.resolve())
    except ValueError:
        return
    raise KeyringError(
        f"keyring {keyring_path} is inside the recordings folder {recordings_dir}; keep keys"
        " away from the data they protect (set TRUSTLINE_KEYRING elsewhere)"
    )
