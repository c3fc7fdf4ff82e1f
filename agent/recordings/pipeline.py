"""Blocking, crash-safe file steps on the recordings folder; the service runs them in a thread.

May: read plaintext recordings, write sealed files through a temp file beside the target
(fsync, link, fsync the folder), check what was written (FORMAT.md, "Sealing"), verify by
decrypting, delete plaintext that is proven sealed,
delete its own temp files, move aside (under a fresh name) a sealed file that fails to open,
read /proc to see which files another process holds open, take the folder's flock.
Must not: delete a plaintext whose sealed copy has not been verified, delete a sealed file
(but for retention), overwrite any file, talk to the database, log recording content or keys.
A SIGKILL between any two lines leaves every recording complete as plaintext, as a verified
sealed file, or both (resolved later).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from agent.errors import RecordingError
from agent.recordings import format as fmt
from agent.recordings.keyring import Keyring, fsync_dir

# What MixMonitor (and Monitor) can write, by format name; anything else in the folder is left.
AUDIO_SUFFIXES = frozenset(
    {
        ".wav",
        ".wav49",
        ".gsm",
        ".ulaw",
        ".alaw",
        ".ul",
        ".al",
        ".sln",
        ".sln16",
        ".raw",
        ".g722",
        ".g729",
        ".mp3",
        ".ogg",
        ".opus",
        ".au",
        ".siren7",
        ".siren14",
    }
)
TEMP_MARK = ".tlrec-tmp"
REWRAP_MARK = ".tlrec-rewrap"
REJECTED_MARK = ".tlrec-rejected"
PART_MARK = ".tlrec-part"  # a decryption in progress, where unnamed files are not supported
# One flock per recordings folder, taken by every process (agent, CLI, post-command) around
# each file step that creates, replaces or deletes a sealed file. Hidden: scans ignore it.
LOCK_NAME = ".trustline-recordings.lock"
# ``X.wav.tlrec`` taken by another recording: ``X.wav.2.tlrec``, ``X.wav.3.tlrec``, ...
_MAX_COLLISIONS = 1000
_COUNTER_RE = re.compile(r"^(.+)\.(\d{1,4})$")
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
    set_aside: Path | None = None  # a sealed file under ``path`` that failed to open, moved here
    displaced_by: Path | None = None  # sealed under a free name: this one holds another recording


@dataclass(frozen=True)
class Scan:
    plaintexts: list[Path]
    sealed: list[Path]
    temps: list[Path]
    rejected: list[Path]


def sealed_path(plain: Path, n: int = 1) -> Path:
    """Where ``plain`` is sealed: ``X.wav.tlrec``, or ``X.wav.<n>.tlrec`` when that is taken."""
    return plain.with_name(plain.name + (f".{n}" if n > 1 else "") + fmt.SUFFIX)


def plain_path(sealed: Path) -> Path:
    """The plaintext a sealed file came from (``X.wav.2.tlrec`` came from ``X.wav``)."""
    name = _plain_name(sealed.name)
    return sealed.with_name(name)


def _plain_name(name: str) -> str:
    if name.endswith(fmt.SUFFIX):
        name = name[: -len(fmt.SUFFIX)]
    m = _COUNTER_RE.match(name)
    if m and is_plaintext_name(m.group(1)):
        return m.group(1)
    return name


def uniqueid_from_name(name: str) -> str | None:
    """Asterisk UNIQUEIDs look like ``1795344922.29``; MixMonitor names usually end with one."""
    stem = _plain_name(name.split("/")[-1])
    for suffix in AUDIO_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    m = _UNIQUEID_RE.search(stem)
    return m.group(1) if m else None


def is_plaintext_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES


def scan(folder: Path) -> Scan:
    """Every plaintext recording, sealed file, leftover temp and set-aside file under ``folder``."""
    plaintexts: list[Path] = []
    sealed: list[Path] = []
    temps: list[Path] = []
    rejected: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root)
        for name in sorted(files):
            path = base / name
            if name.startswith(".") and (name.endswith(TEMP_MARK) or name.endswith(REWRAP_MARK)):
                temps.append(path)
            elif name.startswith(".") and name.endswith(REJECTED_MARK):
                rejected.append(path)
            elif name.endswith(fmt.SUFFIX) and not name.startswith("."):
                sealed.append(path)
            elif is_plaintext_name(name) and not path.is_symlink():
                plaintexts.append(path)
    return Scan(plaintexts, sealed, temps, rejected)


@dataclass(frozen=True)
class Survey:
    ready: list[Path]  # plaintexts safe to seal now
    busy: list[Path]  # still being written, or not yet known not to be
    sealed: list[Path]
    rejected: list[Path]
    removed_temps: list[Path]
    sees_writers: bool  # False: /proc could not tell who holds files open (see open_paths)


def survey(
    folder: Path,
    settle_seconds: float,
    quiet_seconds: float,
    temps_older_than: float | None,
    proc: Path = Path("/proc"),
) -> Survey:
    """One pass for a sweep: scan, drop our stale temp files, split ready from busy.

    Nobody has said these files are complete (no AMI Hangup, no post-command), so when /proc
    cannot show who holds them open, only ``quiet_seconds`` without a change makes one ready:
    a call on hold writes nothing for a while, but not for ten minutes.
    """
    found = scan(folder)
    removed = remove_temps(found.temps, temps_older_than)
    held = open_paths(folder, proc)
    wait = settle_seconds if held is not None else max(settle_seconds, quiet_seconds)
    ready: list[Path] = []
    busy: list[Path] = []
    for plain in found.plaintexts:
        (ready if settled(plain, held, wait) else busy).append(plain)
    return Survey(ready, busy, found.sealed, found.rejected, removed, held is not None)


def open_paths(folder: Path, proc: Path = Path("/proc")) -> set[str] | None:
    """Files under ``folder`` that any process holds open, or None when /proc cannot tell.

    One pass over /proc/*/fd: cheap next to sealing, and decisive where MixMonitor still
    writes, but only when we can see MixMonitor. The answer is None (unknown), never an
    empty "nobody", when
    - any process's fd folder or fd link is refused (another user, no CAP_SYS_PTRACE, Yama,
      hidepid): that process may be Asterisk;
    - no visible process runs as another user: we are alone in our own PID namespace (a
      container not started with ``--pid=container:asterisk``) or hidepid hides the rest, and
      an empty answer would only mean we cannot see Asterisk.
    ``proc`` is the process table to read: the real /proc, or a narrower view of it.
    """
    prefix = str(folder.resolve()) + os.sep
    found: set[str] = set()
    me = os.geteuid()
    others = False
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            if not others and _uid_of(proc / pid) not in (None, me):
                others = True
            fd_dir = proc / pid / "fd"
            fds = os.listdir(fd_dir)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process ended while we looked
        except PermissionError:
            return None
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except PermissionError:
                return None
            except OSError:
                continue  # the descriptor closed while we looked
            if target.startswith(prefix):
                found.add(target)
    return found if others else None


def _uid_of(process: Path) -> int | None:
    """A process's real uid from its status file (the /proc folder's owner is root for a
    process that dropped privileges, so it cannot say)."""
    try:
        with open(process / "status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def settled(path: Path, held_open: set[str] | None, settle_seconds: float) -> bool:
    """True when nothing is seen holding ``path`` open and it has not changed for a while."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if held_open is not None and str(path.resolve()) in held_open:
        return False
    return time.time() - st.st_mtime >= settle_seconds


def settle_state(
    path: Path,
    settle_seconds: float,
    *,
    quiet_seconds: float,
    reported: bool,
    proc: Path = Path("/proc"),
) -> str:
    """``ready`` to seal, ``busy`` (open or recently written), ``missing`` or ``sealed``.

    ``reported``: AMI (the channel hung up) or the post-command said the recording is
    complete; then, when /proc cannot tell, ``settle_seconds`` without a change will do.
    Otherwise an unseen writer is only ruled out by ``quiet_seconds`` without a change.
    """
    if not path.exists():
        return "sealed" if sealed_path(path).exists() else "missing"
    held = open_paths(path.parent, proc)
    wait = settle_seconds if held is not None or reported else max(settle_seconds, quiet_seconds)
    return "ready" if settled(path, held, wait) else "busy"


def open_folder_lock(folder: Path) -> int:
    """A descriptor on the folder's lock file (created 0600 if needed), for ``try_lock``."""
    return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def try_lock(fd: int) -> bool:
    """Take the folder's flock without blocking; False when another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def seal(plain: Path, keyring: Keyring, *, chunk_size: int = fmt.DEFAULT_CHUNK) -> Sealed:
    """Seal ``plain`` beside itself and verify it; the plaintext is not removed here.

    Order: temp file beside the target, fsync, link to the final name (never overwriting),
    fsync the folder, spot-check the file on disk (FORMAT.md, "Sealing"). A file already
    under the final name is checked against the plaintext: the same recording (a crash after
    linking) is adopted; one that does not open is moved aside under a fresh name and the name
    reused; a valid one holding another recording (MixMonitor reused a name) keeps its name,
    and this recording is sealed under the next free one, ``X.wav.2.tlrec``: audio is never
    left in plaintext for a name.
    """
    aside: Path | None = None
    displaced: Path | None = None
    n = 1
    while n <= _MAX_COLLISIONS:
        target = sealed_path(plain, n)
        if os.path.lexists(target):
            try:
                same = _adopt_if_same(plain, target, keyring)
            except RecordingError:
                aside = set_aside(target)
            else:
                if same is not None:
                    return replace(same, set_aside=aside, displaced_by=displaced)
                displaced = displaced or target
                n += 1
                continue
        sealed = _seal_to(plain, target, keyring, chunk_size)
        if sealed is not None:
            return replace(sealed, set_aside=aside, displaced_by=displaced)
        # A file appeared under this name meanwhile (another process): look at it next turn.
    raise PlaintextConflict(
        f"{plain}: {_MAX_COLLISIONS} sealed files already use this name; the plaintext is left"
        " for an administrator"
    )


def _seal_to(plain: Path, target: Path, keyring: Keyring, chunk_size: int) -> Sealed | None:
    """Seal ``plain`` as the new file ``target``; None if ``target`` appeared meanwhile."""
    tmp = plain.with_name(f".{plain.name}.{secrets.token_hex(4)}{TEMP_MARK}")
    digest = _BackgroundSha256()
    with digest, open(plain, "rb", opener=_nofollow) as src:
        before = os.fstat(src.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise RecordingError(f"{plain}: not a regular file")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as dst:
                info = fmt.encrypt_file(
                    src.fileno(),
                    dst.fileno(),
                    keyring.active,
                    before.st_size,
                    chunk_size=chunk_size,
                    hasher=digest,
                )
                os.fsync(dst.fileno())
            after = os.stat(plain)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise fmt.SourceChanged(f"{plain}: changed while it was being sealed")
            try:
                # link, not rename: a sealed file that appeared meanwhile is never clobbered.
                os.link(tmp, target)
            except FileExistsError:
                return None
            fsync_dir(plain.parent)
        finally:
            _unlink_quietly(tmp)
        sha256 = digest.hexdigest()
    # No second full pass (FORMAT.md, "Sealing"): the SHA-256 was taken over the very bytes
    # written, fsync returned, and the spot check proves the keyring opens the file as it
    # lies on disk. Every later reader still authenticates every chunk.
    with open(target, "rb", opener=_nofollow) as sealed_file:
        fmt.spot_check(sealed_file, dict(keyring.keys), name=str(target))
    return Sealed(target, info.plain_size, info.sealed_size, info.key_id, sha256, before.st_mtime)


def _adopt_if_same(plain: Path, target: Path, keyring: Keyring) -> Sealed | None:
    """The sealed file ``target`` if it decrypts, fully authenticated, to exactly ``plain``.

    None when it holds another recording; RecordingError when it does not open.
    """
    digest = hashlib.sha256()
    before = os.stat(plain)
    with open(target, "rb", opener=_nofollow) as src, open(plain, "rb") as ref:
        sink = _CompareSink(ref)
        header = fmt.decrypt_stream(src, sink, dict(keyring.keys), name=str(target), hasher=digest)
        same = sink.same and not ref.read(1)
    if not same:
        return None
    return Sealed(
        target,
        header.plain_length,
        target.stat().st_size,
        header.key_id,
        digest.hexdigest(),
        before.st_mtime,
    )


def set_aside(target: Path) -> Path:
    """Move a sealed file that does not open out of the way, under a name no one else has.

    link then unlink, never rename: an earlier set-aside file is never overwritten.
    """
    while True:
        aside = target.with_name(
            f".{target.name}.{int(time.time())}.{secrets.token_hex(4)}{REJECTED_MARK}"
        )
        try:
            os.link(target, aside)
        except FileExistsError:
            continue
        break
    os.unlink(target)
    fsync_dir(target.parent)
    return aside


_REJECTED_RE = re.compile(
    r"^\.(.+" + re.escape(fmt.SUFFIX) + r")\.\d+\.[0-9a-f]+" + re.escape(REJECTED_MARK) + "$"
)


def rejected_origin(aside: Path) -> Path:
    """The sealed file a set-aside file was moved from (its own path if the name is odd)."""
    m = _REJECTED_RE.match(aside.name)
    return aside.with_name(m.group(1)) if m else aside


def describe(path: Path) -> Sealed:
    """Size, SHA-256 and time of a file that does not open (a set-aside file), for its row."""
    digest = hashlib.sha256()
    with open(path, "rb", opener=_nofollow) as src:
        st = os.fstat(src.fileno())
        while block := src.read(_COPY_CHUNK):
            digest.update(block)
    return Sealed(path, 0, st.st_size, "-", digest.hexdigest(), st.st_mtime)


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
    path: Path,
    keyring: Keyring,
    *,
    expected_sha256: str | None = None,
    pending_sha256: str | None = None,
    hash_file: bool = True,
) -> Sealed:
    """Authenticate every byte of a sealed file; optionally check it is the recorded file.

    ``pending_sha256``: the hash a re-wrap stored before replacing the file; a file that
    matches it is the recorded recording under its new header (a crash before the row
    caught up), not a substitute. The returned ``sha256`` says which one it is.
    """
    digest = hashlib.sha256()
    with open(path, "rb", opener=_nofollow) as src:
        header = fmt.decrypt_stream(
            src, None, dict(keyring.keys), name=str(path), hasher=digest if hash_file else None
        )
        size = os.fstat(src.fileno()).st_size
        mtime = os.fstat(src.fileno()).st_mtime
    if expected_sha256 is not None:
        _check_recorded(path, digest.hexdigest(), expected_sha256, pending_sha256)
    sha256 = digest.hexdigest() if hash_file else ""
    return Sealed(path, header.plain_length, size, header.key_id, sha256, mtime)


def _check_recorded(path: Path, actual: str, expected: str, pending: str | None) -> None:
    if actual != expected and (pending is None or actual != pending):
        raise MetadataMismatch(
            f"{path}: opens, but is not the file the store recorded (SHA-256 differs)"
        )


class Interrupted(RecordingError):
    """A decryption was stopped (SIGTERM, SIGINT) before its end; nothing was left behind."""


class _Guard:
    """A decrypt sink that checks ``stop`` before each chunk: a signal ends the copy."""

    def __init__(self, dst: fmt.Sink, stop: threading.Event | None) -> None:
        self._dst = dst
        self._stop = stop

    def write(self, data: bytes) -> object:
        if self._stop is not None and self._stop.is_set():
            raise Interrupted("decryption interrupted; no audio was left behind")
        return self._dst.write(data)


def open_unnamed(folder: Path) -> int | None:
    """An unnamed file in ``folder`` (Linux O_TMPFILE): it vanishes with the process unless
    linked, so a SIGKILL leaves no partial audio. None where the file system lacks it."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag:
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise


def decrypt_to(
    path: Path,
    out: Path,
    keyring: Keyring,
    *,
    expected_sha256: str,
    pending_sha256: str | None = None,
    stop: threading.Event | None = None,
    register_part: Callable[[Path], None] | None = None,
) -> int:
    """Write the authenticated plaintext of ``path`` to ``out`` (created 0600, never replaced).

    The audio goes to an unnamed file in ``out``'s folder and gets its name only once every
    chunk authenticated and the file matched its recorded SHA-256: a killed process leaves
    nothing. Where unnamed files are not supported, a named ``.part`` file is used instead,
    handed to ``register_part`` first (so the next run can remove it after a SIGKILL) and
    removed here on any error or ``stop``.
    """
    if out.exists() or out.is_symlink():
        raise RecordingError(f"{out} already exists; choose another --out")
    fd = open_unnamed(out.parent)
    tmp: Path | None = None
    if fd is None:
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}{PART_MARK}")
        if register_part is not None:
            register_part(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    digest = hashlib.sha256()
    try:
        with open(path, "rb", opener=_nofollow) as src, os.fdopen(fd, "wb") as dst:
            header = fmt.decrypt_stream(
                src, _Guard(dst, stop), dict(keyring.keys), name=str(path), hasher=digest
            )
            _check_recorded(path, digest.hexdigest(), expected_sha256, pending_sha256)
            dst.flush()
            os.fsync(dst.fileno())
            try:
                if tmp is None:
                    _link_unnamed(dst.fileno(), out)
                else:
                    os.link(tmp, out)
            except FileExistsError:
                raise RecordingError(f"{out} already exists; choose another --out") from None
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)
    return header.plain_length


def _link_unnamed(fd: int, out: Path) -> None:
    """Give an O_TMPFILE file its name: linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N (a
    directory descriptor makes Python use linkat with that flag instead of plain link)."""
    fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(str(fd), out, src_dir_fd=fds, follow_symlinks=True)
    finally:
        os.close(fds)


def decrypt_stream_to(
    path: Path,
    dst: fmt.Sink,
    keyring: Keyring,
    *,
    expected_sha256: str,
    pending_sha256: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Stream the authenticated plaintext of ``path`` to ``dst`` (a pipe to a player).

    The file is first hashed (from the same descriptor) against its recorded SHA-256, so no
    audio of a substituted file is ever released; then each chunk is written once it
    authenticates. Nothing is stored on disk.
    """
    digest = hashlib.sha256()
    with open(path, "rb", opener=_nofollow) as src:
        while block := src.read(_COPY_CHUNK):
            digest.update(block)
        _check_recorded(path, digest.hexdigest(), expected_sha256, pending_sha256)
        src.seek(0)
        header = fmt.decrypt_stream(src, _Guard(dst, stop), dict(keyring.keys), name=str(path))
    return header.plain_length


def remove_parts(parts: list[Path]) -> list[Path]:
    """Delete named ``.part`` files a killed decryption left (only names we would write)."""
    removed = []
    for part in parts:
        if not (part.name.startswith(".") and part.name.endswith(PART_MARK)):
            continue
        try:
            os.unlink(part)
        except FileNotFoundError:
            continue
        removed.append(part)
    return removed


@dataclass(frozen=True)
class PreparedRewrap:
    """A re-wrapped copy, verified, waiting to replace ``path`` (``tmp`` None: nothing to do)."""

    path: Path
    tmp: Path | None
    sealed: Sealed  # what ``path`` is once committed: key id, size, SHA-256


def prepare_rewrap(
    path: Path, keyring: Keyring, *, expected_sha256: str, pending_sha256: str | None = None
) -> PreparedRewrap:
    """Write ``path`` re-wrapped under the active key to a temp file beside it, and verify it.

    Chunks are copied, not re-sealed. The source must be the recorded file: its SHA-256
    equals the stored one, or the pending one of an earlier re-wrap that crashed before the
    store caught up. A file whose header already names the active key is only verified, on
    the same condition: any other valid file (another recording copied over) is refused.
    """
    keys = dict(keyring.keys)
    with open(path, "rb", opener=_nofollow) as src:
        size = src.seek(0, os.SEEK_END)
        src.seek(0)
        header = fmt.read_header(src, size, str(path))
    if header.key_id == keyring.active_id:
        done = verify(path, keyring, expected_sha256=expected_sha256, pending_sha256=pending_sha256)
        return PreparedRewrap(path, None, done)
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
        try:
            _check_recorded(path, old_digest.hexdigest(), expected_sha256, pending_sha256)
        except MetadataMismatch:
            raise MetadataMismatch(
                f"{path}: is not the file the store recorded (SHA-256 differs); not re-wrapped"
            ) from None
        sealed = verify(tmp, keyring)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return PreparedRewrap(path, tmp, replace(sealed, path=path))


def commit_rewrap(prepared: PreparedRewrap) -> None:
    """Put the re-wrapped copy in place (the store must already hold its pending SHA-256)."""
    if prepared.tmp is None:
        return
    try:
        if not os.path.lexists(prepared.path):
            # Deleted meanwhile (retention, by hand): re-wrapping must not bring it back.
            raise RecordingError(f"{prepared.path}: was deleted while being re-wrapped")
        os.replace(prepared.tmp, prepared.path)
        fsync_dir(prepared.path.parent)
    finally:
        _unlink_quietly(prepared.tmp)


def discard_rewrap(prepared: PreparedRewrap) -> None:
    if prepared.tmp is not None:
        _unlink_quietly(prepared.tmp)


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

    At most one pool window of chunks (``2 * fmt.WORKERS``) waits for the hasher, so memory
    stays bounded and the encrypting workers rarely wait on it; order is kept because one
    worker takes the updates first in, first out.
    """

    _BACKLOG = 2 * fmt.WORKERS

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
