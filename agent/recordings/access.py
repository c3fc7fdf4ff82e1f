"""Access to sealed recordings: verify, decrypt (audited), re-wrap after a key rotation.

May: authenticate sealed files against their rows, write one recording's audio for a named
operator with a reason (the audit row first; a decryption cut short leaves no audio and an
``incomplete`` row), clean up after decryptions whose process died, re-wrap data keys under
the active key (the audio is never re-encrypted).
Must not: decide who may decrypt (edges check roles; this insists on an operator and a reason
and audits), write plaintext inside the recordings folder, or log anything read from a file.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from agent.errors import BadRequest, RecordingError, TrustlineError
from agent.recordings import pipeline
from agent.recordings.keyring import Keyring
from agent.recordings.repo import RecordingRow
from agent.recordings.runtime import LOGGER, Progress, Runtime, describe_error

log = logging.getLogger(LOGGER)

INCOMPLETE = "incomplete"  # audit outcome of a decryption stopped before its end
# Under the data folder: one note per named partial file of a decryption in progress.
PARTS_DIR = "decrypting"


@dataclass(frozen=True)
class VerifyResult:
    recording: RecordingRow
    problem: str | None  # None when the file authenticated and matched its metadata


@dataclass
class RewrapReport:
    total: int = 0
    rewrapped: int = 0
    failures: list[str] = field(default_factory=list)


async def get(rt: Runtime, recording_id: int) -> RecordingRow:
    row = await rt.repo.get(recording_id)
    if row is None:
        raise BadRequest(f"no recording with ID {recording_id}")
    return row


# -- verify ----------------------------------------------------------------------------------


async def verify(
    rt: Runtime, ids: list[int] | None, progress: Progress | None
) -> list[VerifyResult]:
    ring = await rt.ring()
    rows = [await get(rt, i) for i in ids] if ids else await rt.repo.live()
    results: list[VerifyResult] = []
    for row in rows:
        if progress is not None and results:
            progress(len(results), len(rows))
        results.append(VerifyResult(row, await _problem_of(row, ring)))
    if progress is not None and rows:
        progress(len(rows), len(rows))
    return results


async def _problem_of(row: RecordingRow, ring: Keyring) -> str | None:
    """What is wrong with one recording's file, or None when it verifies."""
    if row.purged_at is not None:
        return "purged"
    if row.rejected_at is not None:
        return f"{row.path}: set aside, it does not open"
    try:
        await asyncio.to_thread(
            pipeline.verify,
            Path(row.path),
            ring,
            expected_sha256=row.sha256,
            pending_sha256=row.pending_sha256,
        )
    except FileNotFoundError:
        return f"{row.path}: file is missing"
    except (RecordingError, OSError) as exc:
        return describe_error(exc)
    return None


# -- decrypt ---------------------------------------------------------------------------------


async def decrypt(
    rt: Runtime,
    recording_id: int,
    out: Path | BinaryIO,
    *,
    operator: str,
    reason: str,
    stop: threading.Event | None,
) -> RecordingRow:
    """Write one recording's audio to ``out`` after auditing who, when, which and why."""
    operator, reason = operator.strip(), reason.strip()
    if not operator:
        raise BadRequest("decrypting needs an operator identity (--operator)")
    if not reason:
        raise BadRequest("decrypting needs a reason (--reason)")
    row = await _decryptable(rt, recording_id, out)
    ring = await rt.ring()
    where = str(out) if isinstance(out, Path) else "-"
    audit_id = await rt.repo.audit_started(
        at=rt.clock.now(),
        action="decrypt",
        recording_id=row.id,
        operator=operator,
        reason=reason,
        detail={"out": where, "uniqueid": row.uniqueid, **_os_identity()},
    )
    notes: list[Path] = []
    try:
        await _write_audio(rt, row, out, ring, stop, notes)
    except BaseException as exc:
        instead = await _failed(rt, audit_id, exc, row, where)
        if instead is not None:
            raise instead from None
        raise
    finally:
        await asyncio.to_thread(_forget_parts, notes)
    await rt.repo.audit_outcome(audit_id, "ok")
    log.info("recordings: recording %d decrypted by %s (audit %d)", row.id, operator, audit_id)
    return row


async def _decryptable(rt: Runtime, recording_id: int, out: Path | BinaryIO) -> RecordingRow:
    """The row to decrypt, once it and ``out`` are fit for it (else a precise refusal)."""
    row = await get(rt, recording_id)
    if row.purged_at is not None:
        raise RecordingError(f"recording {recording_id} was deleted by retention")
    if row.rejected_at is not None:
        raise RecordingError(f"recording {recording_id} was set aside: its file does not open")
    if isinstance(out, Path):
        if not out.is_absolute():
            raise BadRequest(f"--out {out} must be an absolute path")
        if rt.resolve(str(out)) is not None:
            raise BadRequest(
                f"--out {out} is inside the recordings folder; plaintext there would be"
                " sealed again"
            )
    return row


async def _write_audio(
    rt: Runtime,
    row: RecordingRow,
    out: Path | BinaryIO,
    ring: Keyring,
    stop: threading.Event | None,
    notes: list[Path],
) -> None:
    if isinstance(out, Path):
        job = functools.partial(
            pipeline.decrypt_to, Path(row.path), out, ring,
            register_part=lambda part: notes.append(_register_part(rt, part)),
        )  # fmt: skip
    else:
        job = functools.partial(pipeline.decrypt_stream_to, Path(row.path), out, ring)
    await asyncio.to_thread(
        job, expected_sha256=row.sha256, pending_sha256=row.pending_sha256, stop=stop
    )


async def _failed(
    rt: Runtime, audit_id: int, exc: BaseException, row: RecordingRow, where: str
) -> Exception | None:
    """Close the audit row of a decryption that failed; the error to raise instead, if any."""
    interrupted = isinstance(exc, (pipeline.Interrupted, asyncio.CancelledError, BrokenPipeError))
    await asyncio.shield(
        rt.repo.audit_outcome(
            audit_id, INCOMPLETE if interrupted else f"failed: {type(exc).__name__}"
        )
    )
    if isinstance(exc, FileNotFoundError) and exc.filename == row.path:
        return RecordingError(f"{row.path}: file is missing")
    if isinstance(exc, OSError):
        return BadRequest(f"cannot write {where}: {describe_error(exc)}")
    return None


async def recover_interrupted(rt: Runtime) -> int:
    """Remove partial audio of decryptions whose process died; close their audit rows."""
    await asyncio.to_thread(_remove_dead_parts, rt)
    closed = 0
    for audit_id, detail in await rt.repo.started_audits("decrypt"):
        pid = detail.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            await rt.repo.audit_outcome(audit_id, INCOMPLETE)
            closed += 1
    return closed


def _register_part(rt: Runtime, part: Path) -> Path:
    """Note a named partial file before it exists, under this process's id."""
    folder = rt.data_dir / PARTS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    note = folder / f"{os.getpid()}.{part.name}"
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(str(part))
    return note


def _remove_dead_parts(rt: Runtime) -> None:
    folder = rt.data_dir / PARTS_DIR
    if not folder.is_dir():
        return
    for note in folder.iterdir():
        pid = note.name.split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        for part in pipeline.remove_parts([Path(note.read_text())]):
            log.warning("recordings: removed partial audio %s left by a killed decryption", part)
        note.unlink(missing_ok=True)


def _forget_parts(notes: list[Path]) -> None:
    """A decryption ended: its partial file (if any) and the note about it go."""
    for note in notes:
        pipeline.remove_parts([Path(note.read_text())])
        note.unlink(missing_ok=True)


def _os_identity() -> dict[str, object]:
    """Who runs this process, as the OS knows it: recorded beside the --operator they typed."""
    try:
        login: str | None = getpass.getuser()
    except (OSError, KeyError):
        login = None
    return {
        "os_login": login,
        "sudo_user": os.environ.get("SUDO_USER"),
        "euid": os.geteuid(),
        "pid": os.getpid(),
    }


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (then its decryption may still be running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- re-wrap ---------------------------------------------------------------------------------


async def rewrap(rt: Runtime, progress: Progress | None) -> RewrapReport:
    """Re-wrap every data key not under the active key; the audio is never re-encrypted."""
    ring = await rt.ring()
    rows = await rt.repo.not_wrapped_by(ring.active_id)
    report = RewrapReport(total=len(rows))
    for n, row in enumerate(rows, start=1):
        try:
            if await rt.step(_rewrap_one(rt, row.id, ring)):
                report.rewrapped += 1
        except (TrustlineError, OSError) as exc:
            report.failures.append(f"recording {row.id}: {describe_error(exc)}")
        if progress is not None:
            progress(n, len(rows))
    return report


async def _rewrap_one(rt: Runtime, recording_id: int, ring: Keyring) -> bool:
    """Re-wrap one file under the folder lock; False if retention took it meanwhile.

    The new digest is stored as pending before the file is replaced: a crash between the
    replace and the row update leaves a file that still matches its row.
    """
    row = await rt.repo.get(recording_id)
    if row is None or row.purged_at is not None or row.rejected_at is not None:
        return False
    prepared = await asyncio.to_thread(
        pipeline.prepare_rewrap,
        Path(row.path),
        ring,
        expected_sha256=row.sha256,
        pending_sha256=row.pending_sha256,
    )
    try:
        if prepared.tmp is not None:
            await rt.repo.set_pending(row.id, prepared.sealed.sha256)
            again = await rt.repo.get(row.id)
            if again is None or again.purged_at is not None:
                return False
            await asyncio.to_thread(pipeline.commit_rewrap, prepared)
    finally:
        await asyncio.to_thread(pipeline.discard_rewrap, prepared)
    new = prepared.sealed
    await rt.repo.rewrapped(row.id, key_id=new.key_id, sha256=new.sha256, size=new.size)
    return True
