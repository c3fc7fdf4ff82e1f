"""Opening sealed files, blocking: verify, decrypt to a file or a stream, re-wrap the key.

May: authenticate every byte of a sealed file and check it is the recorded one, write its
plaintext to a new file outside the folder (an unnamed file linked only once complete) or to
a stream, write a re-wrapped copy beside a sealed file and put it in place.
Must not: release audio of a file that does not match its recorded digest, leave partial
audio behind after an error or a stop, re-encrypt the audio, talk to the database, log
recording content or keys.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from agent.errors import RecordingError
from agent.recordings import format as fmt
from agent.recordings.digest import FileDigest
from agent.recordings.folder import (
    COPY_CHUNK,
    PART_MARK,
    REWRAP_MARK,
    nofollow,
    unlink_quietly,
)
from agent.recordings.keyring import Keyring, fsync_dir
from agent.recordings.seal_steps import Sealed


class MetadataMismatch(RecordingError):
    """The sealed file opens but is not the file the store recorded (replaced or swapped)."""


def verify(
    path: Path,
    keyring: Keyring,
    *,
    expected_sha256: str | None = None,
    pending_sha256: str | None = None,
    hash_file: bool = True,
) -> Sealed:
    """Authenticate every byte of a sealed file; optionally check it is the recorded file.

    ``pending_sha256``: the digest a re-wrap stored before replacing the file; a file that
    matches it is the recorded recording under its new header (a crash before the row
    caught up), not a substitute. The returned ``sha256`` is the file's digest as a row
    stores it now (digest.py), whichever kind the row held.
    """
    digest = FileDigest(expected_sha256, pending_sha256)
    with open(path, "rb", opener=nofollow) as src:
        header = fmt.decrypt_stream(
            src, None, dict(keyring.keys), name=str(path), hasher=digest if hash_file else None
        )
        size = os.fstat(src.fileno()).st_size
        mtime = os.fstat(src.fileno()).st_mtime
    if expected_sha256 is not None:
        _check_recorded(path, digest, expected_sha256, pending_sha256)
    sha256 = digest.text() if hash_file else ""
    return Sealed(path, header.plain_length, size, header.key_id, sha256, mtime)


def _check_recorded(path: Path, actual: FileDigest, expected: str, pending: str | None) -> None:
    if not (actual.matches(expected) or actual.matches(pending)):
        raise MetadataMismatch(
            f"{path}: opens, but is not the file the store recorded (its digest differs)"
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
    chunk authenticated and the file matched its recorded digest: a killed process leaves
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
    digest = FileDigest(expected_sha256, pending_sha256)
    try:
        with open(path, "rb", opener=nofollow) as src, os.fdopen(fd, "wb") as dst:
            header = fmt.decrypt_stream(
                src, _Guard(dst, stop), dict(keyring.keys), name=str(path), hasher=digest
            )
            _check_recorded(path, digest, expected_sha256, pending_sha256)
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
            unlink_quietly(tmp)
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

    The file is first hashed (from the same descriptor) against its recorded digest, so no
    audio of a substituted file is ever released; then each chunk is written once it
    authenticates. Nothing is stored on disk.
    """
    digest = FileDigest(expected_sha256, pending_sha256)
    with open(path, "rb", opener=nofollow) as src:
        while block := src.read(COPY_CHUNK):
            digest.update(block)
        _check_recorded(path, digest, expected_sha256, pending_sha256)
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
    sealed: Sealed  # what ``path`` is once committed: key id, size, digest


def prepare_rewrap(
    path: Path, keyring: Keyring, *, expected_sha256: str, pending_sha256: str | None = None
) -> PreparedRewrap:
    """Write ``path`` re-wrapped under the active key to a temp file beside it, and verify it.

    Chunks are copied, not re-sealed. The source must be the recorded file: its digest
    equals the stored one, or the pending one of an earlier re-wrap that crashed before the
    store caught up. A file whose header already names the active key is only verified, on
    the same condition: any other valid file (another recording copied over) is refused.
    """
    keys = dict(keyring.keys)
    with open(path, "rb", opener=nofollow) as src:
        size = src.seek(0, os.SEEK_END)
        src.seek(0)
        header = fmt.read_header(src, size, str(path))
    if header.key_id == keyring.active_id:
        done = verify(path, keyring, expected_sha256=expected_sha256, pending_sha256=pending_sha256)
        return PreparedRewrap(path, None, done)
    new_header = fmt.rewrap_header(header, keys, keyring.active, str(path))
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{REWRAP_MARK}")
    old_digest = FileDigest(expected_sha256, pending_sha256)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(path, "rb", opener=nofollow) as src, os.fdopen(fd, "wb") as dst:
            old_digest.update(src.read(header.encoded_len))
            dst.write(new_header.encode())
            while block := src.read(COPY_CHUNK):
                old_digest.update(block)
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
        try:
            _check_recorded(path, old_digest, expected_sha256, pending_sha256)
        except MetadataMismatch:
            raise MetadataMismatch(
                f"{path}: is not the file the store recorded (its digest differs); not re-wrapped"
            ) from None
        sealed = verify(tmp, keyring)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return PreparedRewrap(path, tmp, replace(sealed, path=path))


def commit_rewrap(prepared: PreparedRewrap) -> None:
    """Put the re-wrapped copy in place (the store must already hold its pending digest)."""
    if prepared.tmp is None:
        return
    try:
        if not os.path.lexists(prepared.path):
            # Deleted meanwhile (retention, by hand): re-wrapping must not bring it back.
            raise RecordingError(f"{prepared.path}: was deleted while being re-wrapped")
        os.replace(prepared.tmp, prepared.path)
        fsync_dir(prepared.path.parent)
    finally:
        unlink_quietly(prepared.tmp)


def discard_rewrap(prepared: PreparedRewrap) -> None:
    if prepared.tmp is not None:
        unlink_quietly(prepared.tmp)
