"""The recordings folder: names, what is in it, who holds files open, its flock.

May: list plaintext recordings, sealed files, our own temp files and set-aside files, read
/proc to see which files another process holds open, say when a file has settled, take the
folder's flock, delete our own leftover temp files.
Must not: read or write a recording's content, delete a recording, talk to the database.
Blocking: the service runs these in a worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from agent.recordings import format as fmt

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
_COUNTER_RE = re.compile(r"^(.+)\.(\d{1,4})$")
_UNIQUEID_RE = re.compile(r"(\d{9,11}\.\d+)$")
COPY_CHUNK = 1024 * 1024


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


_REJECTED_RE = re.compile(
    r"^\.(.+" + re.escape(fmt.SUFFIX) + r")\.\d+\.[0-9a-f]+" + re.escape(REJECTED_MARK) + "$"
)


def rejected_origin(aside: Path) -> Path:
    """The sealed file a set-aside file was moved from (its own path if the name is odd)."""
    m = _REJECTED_RE.match(aside.name)
    return aside.with_name(m.group(1)) if m else aside


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


def nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
