"""Sealing one file, blocking: encrypt beside the plaintext, link, fsync, spot-check.

May: read a plaintext recording, write its sealed file through a temp file beside the target
(fsync, link, fsync the folder), check what was written (FORMAT.md, "Sealing"), move aside
(under a fresh name) a sealed file that fails to open, delete a plaintext proven sealed, and
delete a sealed file for retention.
Must not: delete a plaintext whose sealed copy has not been verified, overwrite any file, talk
to the database, log recording content or keys. A SIGKILL between any two lines leaves the
recording complete as plaintext, as a verified sealed file, or both (resolved later).
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path

from agent.errors import RecordingError
from agent.recordings import format as fmt
from agent.recordings.digest import FileDigest
from agent.recordings.folder import (
    COPY_CHUNK,
    REJECTED_MARK,
    TEMP_MARK,
    nofollow,
    sealed_path,
    unlink_quietly,
)
from agent.recordings.keyring import Keyring, fsync_dir

# ``X.wav.tlrec`` taken by another recording: ``X.wav.2.tlrec``, ``X.wav.3.tlrec``, ...
_MAX_COLLISIONS = 1000


class PlaintextConflict(RecordingError):
    """A valid sealed file with the same name holds a different recording than the plaintext."""


@dataclass(frozen=True)
class Sealed:
    path: Path
    plain_size: int
    size: int
    key_id: str
    sha256: str  # the file's digest as a row stores it (digest.py), in the sha256 column
    recorded_at: float
    set_aside: Path | None = None  # a sealed file under ``path`` that failed to open, moved here
    displaced_by: Path | None = None  # sealed under a free name: this one holds another recording
    older: tuple[str, ...] = ()  # how a row from before names this same file (its SHA-256)


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
    digest = FileDigest()  # fed in file order by encrypt_file's lanes
    with open(plain, "rb", opener=nofollow) as src:
        before = os.fstat(src.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise RecordingError(f"{plain}: not a regular file")
        # Read once, front to back (the lanes read a run or two apart): ask for readahead.
        os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
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
            unlink_quietly(tmp)
        sha256 = digest.text()
    # No second full pass (FORMAT.md, "Sealing"): the digest was taken over the very bytes
    # written, fsync returned, and the spot check proves the keyring opens the file as it
    # lies on disk. Every later reader still authenticates every chunk.
    with open(target, "rb", opener=nofollow) as sealed_file:
        fmt.spot_check(sealed_file, dict(keyring.keys), name=str(target))
    return Sealed(target, info.plain_size, info.sealed_size, info.key_id, sha256, before.st_mtime)


def _adopt_if_same(plain: Path, target: Path, keyring: Keyring) -> Sealed | None:
    """The sealed file ``target`` if it decrypts, fully authenticated, to exactly ``plain``.

    None when it holds another recording; RecordingError when it does not open. Hashed in
    SHA-256 too: a crash may have left the row an earlier version wrote, naming it so.
    """
    digest = FileDigest(legacy=True)
    before = os.stat(plain)
    with open(target, "rb", opener=nofollow) as src, open(plain, "rb") as ref:
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
        digest.text(),
        before.st_mtime,
        older=digest.older(),
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


def describe(path: Path) -> Sealed:
    """Size, digest and time of a file that does not open (a set-aside file), for its row."""
    digest = FileDigest()
    with open(path, "rb", opener=nofollow) as src:
        st = os.fstat(src.fileno())
        while block := src.read(COPY_CHUNK):
            digest.update(block)
    return Sealed(path, 0, st.st_size, "-", digest.text(), st.st_mtime)


def remove_plaintext(plain: Path) -> None:
    """Delete a plaintext whose sealed copy was verified and recorded."""
    try:
        os.unlink(plain)
    except FileNotFoundError:
        return
    fsync_dir(plain.parent)


def delete_sealed(path: Path) -> bool:
    """Retention: delete a sealed file. False when it was already gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


class _CompareSink:
    """A decrypt sink that compares the plaintext with a reference file instead of storing it."""

    def __init__(self, ref: fmt.Source) -> None:
        self._ref = ref
        self.same = True

    def write(self, data: bytes) -> int:
        if self.same and self._ref.read(len(data)) != data:
            self.same = False
        return len(data)
