"""Blocking, crash-safe file steps on the recordings folder; the service runs them in a thread.

May: read plaintext recordings, write sealed files through a temp file beside the target
(fsync, link, fsync the folder), verify by decrypting, delete plaintext that is proven sealed,
delete its own temp files, move aside a sealed file that fails to open, read /proc to see
which files another process holds open.
Must not: delete a plaintext whose sealed copy has not been verified, delete a sealed file,
talk to the database, log recording content or keys. A SIGKILL between any two lines leaves
every recording complete as plaintext, as a verified sealed file, or both (resolved later).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agent.errors import RecordingError
from agent.recordings import format as fmt
from agent.recordings.keyring import Keyring, fsync_dir

# What MixMonitor (and Monitor) can write, by format name; anything else in the folder is left.
AUDIO_SUFFIXES = frozenset(
    {".wav", ".wav49", ".gsm", ".ulaw", ".alaw", ".ul", ".al", ".sln", ".sln16", ".raw",
     ".g722", ".g729", ".mp3", ".ogg", ".opus", ".au", ".siren7", ".siren14"}
)
TEMP_MARK = ".tlrec-tmp"
REWRAP_MARK = ".tlrec-rewrap"
REJECTED_MARK = ".tlrec-rejected"
_UNIQUEID_RE = re.compile(r"(\d{9,11}\.\d+)$")
_COPY_CHUNK = 1024 * 1024


class MetadataMismatch(RecordingError):
    """The sealed file opens but is not the file the store recorded (replaced or swapped)."""


class PlaintextConflict(RecordingError):
    """A valid sealed file with the same name holds a different recording than the plaintext."""


@dataclass(frozen=True)
class Sealed:
    path: Path
    plain_size: int
    size: int
    key_id: str
    sha256: str
    recorded_at: float
    set_aside: Path | None = None  # a sealed file under this name that failed to open


@dataclass(frozen=True)
class Scan:
    plaintexts: list[Path]
    sealed: list[Path]
    temps: list[Path]


def sealed_path(plain: Path) -> Path:
    return plain.with_name(plain.name + fmt.SUFFIX)


def plain_path(sealed: Path) -> Path:
    return sealed.with_name(sealed.name[: -len(fmt.SUFFIX)])


def uniqueid_from_name(name: str) -> str | None:
    """Asterisk UNIQUEIDs look like ``1795344922.29``; MixMonitor names usually end with one."""
    stem = name.split("/")[-1]
    for suffix in (fmt.SUFFIX, *AUDIO_SUFFIXES):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    m = _UNIQUEID_RE.search(stem)
    return m.group(1) if m else None


def is_plaintext_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES


def scan(folder: Path) -> Scan:
    """Every plaintext recording, sealed file and leftover temp file under ``folder``."""
    plaintexts: list[Path] = []
    sealed: list[Path] = []
    temps: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root)
        for name in sorted(files):
            path = base / name
            if name.startswith(".") and (name.endswith(TEMP_MARK) or name.endswith(REWRAP_MARK)):
                temps.append(path)
            elif name.endswith(fmt.SUFFIX) and not name.startswith("."):
                sealed.append(path)
            elif is_plaintext_name(name) and not path.is_symlink():
                plaintexts.append(path)
    return Scan(plaintexts, sealed, temps)


@dataclass(frozen=True)
class Survey:
    ready: list[Path]  # plaintexts nobody holds open and unchanged for the settle time
    busy: list[Path]  # plaintexts still being written
    sealed: list[Path]
    removed_temps: list[Path]


def survey(folder: Path, settle_seconds: float, temps_older_than: float | None) -> Survey:
    """One pass for a sweep: scan, drop our stale temp files, split ready from busy."""
    found = scan(folder)
    removed = remove_temps(found.temps, temps_older_than)
    held = open_paths(folder)
    ready: list[Path] = []
    busy: list[Path] = []
    for plain in found.plaintexts:
        (ready if settled(plain, held, settle_seconds) else busy).append(plain)
    return Survey(ready, busy, found.sealed, removed)


def open_paths(folder: Path) -> set[str] | None:
    """Files under ``folder`` that any process holds open, or None when /proc cannot tell.

    One pass over /proc/*/fd: cheap next to sealing, and decisive where MixMonitor still
    writes. Without permission to see every process the answer is None and callers fall back
    to waiting for the file to stop changing.
    """
    prefix = str(folder.resolve()) + os.sep
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    complete = True
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            continue  # the process ended while we looked
        except PermissionError:
            complete = False
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith(prefix):
                found.add(target)
    return found if complete else None


def settled(path: Path, held_open: set[str] | None, settle_seconds: float) -> bool:
    """True when nothing holds ``path`` open and it has not changed for ``settle_seconds``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if held_open is not None and str(path.resolve()) in held_open:
        return False
    return time.time() - st.st_mtime >= settle_seconds


def settle_state(path: Path, settle_seconds: float) -> str:
    """``ready`` to seal, ``busy`` (open or recently written), ``missing`` or ``sealed``."""
    if not path.exists():
        return "sealed" if sealed_path(path).exists() else "missing"
    return "ready" if settled(path, open_paths(path.parent), settle_seconds) else "busy"


def seal(plain: Path, keyring: Keyring, *, chunk_size: int = fmt.DEFAULT_CHUNK) -> Sealed:
    """Seal ``plain`` beside itself and verify it; the plaintext is not removed here.

    Order: temp file beside the target, fsync, link to the final name (never overwriting),
    fsync the folder, verify by decrypting. If the final name already exists, the existing
    file is checked against the plaintext instead (``adopt``).
    """
    target = sealed_path(plain)
    if target.exists():
        return adopt(plain, target, keyring)
    tmp = plain.with_name(f".{plain.name}.{secrets.token_hex(4)}{TEMP_MARK}")
    digest = _BackgroundSha256()
    with digest, open(plain, "rb", opener=_nofollow) as src:
        before = os.fstat(src.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise RecordingError(f"{plain}: not a regular file")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as dst:
                info = fmt.encrypt_stream(
                    src, dst, keyring.active, before.st_size, chunk_size=chunk_size, hasher=digest
                )
                dst.flush()
                os.fsync(dst.fileno())
            after = os.stat(plain)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise fmt.SourceChanged(f"{plain}: changed while it was being sealed")
            try:
                # link, not rename: a sealed file that appeared meanwhile is never clobbered.
                os.link(tmp, target)
            except FileExistsError:
                return adopt(plain, target, keyring)
            fsync_dir(plain.parent)
        finally:
            _unlink_quietly(tmp)
        sha256 = digest.hexdigest()
    # Every chunk's tag and the wrapped key authenticate what is on disk against what we
    # sealed, so the SHA-256 taken while writing is the file's; no second hash pass.
    verify(target, keyring, hash_file=False)
    return Sealed(
        target, info.plain_size, info.sealed_size, info.key_id, sha256, before.st_mtime
    )


def adopt(plain: Path, target: Path, keyring: Keyring) -> Sealed:
    """A sealed file already exists beside the plaintext (a crash after linking it).

    Accept it only if it decrypts, fully authenticated, to exactly the plaintext's bytes.
    A sealed file that fails to open is moved aside (never deleted) and the plaintext is
    sealed afresh; a valid one holding a different recording is a conflict for a human.
    """
    digest = hashlib.sha256()
    before = os.stat(plain)
    try:
        with open(target, "rb", opener=_nofollow) as src, open(plain, "rb") as ref:
            sink = _CompareSink(ref)
            header = fmt.decrypt_stream(
                src, sink, dict(keyring.keys), name=str(target), hasher=digest
            )
            same = sink.same and not ref.read(1)
    except RecordingError:
        aside = target.with_name(f".{target.name}.{int(time.time())}{REJECTED_MARK}")
        os.rename(target, aside)
        fsync_dir(target.parent)
        fresh = seal(plain, keyring)
        return Sealed(fresh.path, fresh.plain_size, fresh.size, fresh.key_id, fresh.sha256,
                      fresh.recorded_at, aside)
    if not same:
        raise PlaintextConflict(
            f"{plain}: a different recording is already sealed as {target.name}; the plaintext"
            " is left for an administrator"
        )
    return Sealed(
        target, header.plain_length, target.stat().st_size, header.key_id, digest.hexdigest(),
        before.st_mtime,
    )


def remove_plaintext(plain: Path) -> None:
    """Delete a plaintext whose sealed copy was verified and recorded."""
    try:
        os.unlink(plain)
    except FileNotFoundError:
        return
    fsync_dir(plain.parent)


def remove_temps(temps: list[Path], older_than: float | None) -> list[Path]:
    """Delete our own leftover temp files (all, or those untouched for ``older_than`` s)."""
    removed = []
    for tmp in temps:
        try:
            if older_than is not None and time.time() - tmp.stat().st_mtime < older_than:
                continue
            os.unlink(tmp)
        except FileNotFoundError:
            continue
        removed.append(tmp)
    return removed


def verify(
    path: Path, keyring: Keyring, *, expected_sha256: str | None = None, hash_file: bool = True
) -> Sealed:
    """Authenticate every byte of a sealed file; optionally check it is the recorded file."""
    digest = hashlib.sha256()
    with open(path, "rb", opener=_nofollow) as src:
        header = fmt.decrypt_stream(
            src, None, dict(keyring.keys), name=str(path), hasher=digest if hash_file else None
        )
        size = os.fstat(src.fileno()).st_size
        mtime = os.fstat(src.fileno()).st_mtime
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise MetadataMismatch(
            f"{path}: opens, but is not the file the store recorded (SHA-256 differs)"
        )
    sha256 = digest.hexdigest() if hash_file else ""
    return Sealed(path, header.plain_length, size, header.key_id, sha256, mtime)


def decrypt_to(path: Path, out: Path, keyring: Keyring, *, expected_sha256: str) -> int:
    """Write the authenticated plaintext of ``path`` to ``out`` (created 0600, never replaced).

    The plaintext goes to a temp file beside ``out`` and takes its name only once every chunk
    authenticated and the file matched its recorded SHA-256: no partial audio is left behind.
    """
    if out.exists() or out.is_symlink():
        raise RecordingError(f"{out} already exists; choose another --out")
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(path, "rb", opener=_nofollow) as src, os.fdopen(fd, "wb") as dst:
            header = fmt.decrypt_stream(src, dst, dict(keyring.keys), name=str(path),
                                        hasher=digest)
            if digest.hexdigest() != expected_sha256:
                raise MetadataMismatch(
                    f"{path}: opens, but is not the file the store recorded (SHA-256 differs)"
                )
            dst.flush()
            os.fsync(dst.fileno())
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise RecordingError(f"{out} already exists; choose another --out") from None
    finally:
        _unlink_quietly(tmp)
    return header.plain_length


def rewrap(path: Path, keyring: Keyring, *, expected_sha256: str) -> Sealed:
    """Re-wrap the data key of ``path`` under the active key; chunks are copied, not re-sealed.

    Written to a temp file, fully verified, then renamed over the original. A file whose
    header already names the active key is only verified (a crash after the rename).
    """
    keys = dict(keyring.keys)
    with open(path, "rb", opener=_nofollow) as src:
        size = src.seek(0, os.SEEK_END)
        src.seek(0)
        header = fmt.read_header(src, size, str(path))
    if header.key_id == keyring.active_id:
        return verify(path, keyring)
    new_header = fmt.rewrap_header(header, keys, keyring.active, str(path))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{REWRAP_MARK}")
    old_digest = hashlib.sha256()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(path, "rb", opener=_nofollow) as src, os.fdopen(fd, "wb") as dst:
            old_digest.update(src.read(header.encoded_len))
            dst.write(new_header.encode())
            while block := src.read(_COPY_CHUNK):
                old_digest.update(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        if old_digest.hexdigest() != expected_sha256:
            raise MetadataMismatch(
                f"{path}: is not the file the store recorded (SHA-256 differs); not re-wrapped"
            )
        sealed = verify(tmp, keyring)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        _unlink_quietly(tmp)
    return Sealed(path, sealed.plain_size, sealed.size, sealed.key_id, sealed.sha256,
                  sealed.recorded_at)


def delete_sealed(path: Path) -> bool:
    """Retention: delete a sealed file. False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


class _BackgroundSha256:
    """SHA-256 on a helper thread: hashlib releases the GIL, so hashing overlaps sealing.

    At most two chunks wait for the hasher, so memory stays constant; order is kept because
    one worker takes the updates first in, first out.
    """

    _BACKLOG = 2

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trustline-sha256")
        self._pending: deque[Future[None]] = deque()

    def update(self, data: bytes | memoryview) -> None:
        chunk = bytes(data) if isinstance(data, memoryview) else data  # must not change later
        self._pending.append(self._pool.submit(self._hash.update, chunk))
        while len(self._pending) > self._BACKLOG:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        return self._hash.hexdigest()

    def __enter__(self) -> _BackgroundSha256:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _CompareSink:
    """A decrypt sink that compares the plaintext with a reference file instead of storing it."""

    def __init__(self, ref: fmt.Source) -> None:
        self._ref = ref
        self.same = True

    def write(self, data: bytes) -> int:
        if self.same and self._ref.read(len(data)) != data:
            self.same = False
        return len(data)


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

