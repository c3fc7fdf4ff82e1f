"""RecordingsService: the use cases of recordings at rest, for the agent and the CLI.

May: schedule sealing when AMI reports a recording complete, sweep the recordings folder,
enforce retention, verify, decrypt for a named operator with a reason (audited; a decryption
cut short leaves no audio and an ``incomplete`` audit row), re-wrap data keys after a
rotation, seal what the post-command hands over its socket (``handoff``). Blocking file and
crypto work runs in a worker thread, one file at a time, so the event loop (and the FastAGI
deadline) never waits on a disk or a cipher. Every
step that creates, replaces or deletes a sealed file holds the recordings folder's flock, so
the agent, the CLI and the post-command never act on one file at once.
Must not: create a keyring (``trustline keys init`` does, on purpose), touch a file outside
the recordings folder, log key material or anything read from a recording, or decide who may
decrypt (edges check roles; this service insists on an operator and a reason and audits).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from agent.clock import Clock
from agent.errors import BadRequest, KeyringError, RecordingError, TrustlineError
from agent.recordings import format as fmt
from agent.recordings import handoff, pipeline
from agent.recordings.keyring import Keyring, check_location, load_keyring
from agent.recordings.repo import AuditRow, RecordingRow, RecordingsRepo
from agent.settings import Settings
from agent.store import Database

log = logging.getLogger(__name__)

DAY = 86400.0
RETENTION_OPERATOR = "retention"
INCOMPLETE = "incomplete"  # audit outcome of a decryption stopped before its end
# Under the data folder: one note per named partial file of a decryption in progress.
PARTS_DIR = "decrypting"


@dataclass
class SweepReport:
    sealed: int = 0
    adopted: int = 0  # sealed files found without metadata, verified and recorded
    busy: int = 0  # still being written (or not known not to be): left for later
    rejected: int = 0  # set-aside files found without a row, now listed
    failed: int = 0
    temps_removed: int = 0
    problem: str | None = None  # why the sweep did not run (no folder, no keyring)


@dataclass(frozen=True)
class VerifyResult:
    recording: RecordingRow
    problem: str | None  # None when the file authenticated and matched its metadata


@dataclass
class RewrapReport:
    total: int = 0
    rewrapped: int = 0
    failures: list[str] = field(default_factory=list)


Progress = Callable[[int, int], None]
T = TypeVar("T")


class RecordingsService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        settle_seconds: float = 2.0,
        poll_seconds: float = 0.5,
        wait_limit_seconds: float = 6 * 3600.0,
        maintenance_seconds: float = 300.0,
        stop_deadline_seconds: float = 30.0,
        chunk_size: int = fmt.DEFAULT_CHUNK,
        proc: Path = Path("/proc"),
    ) -> None:
        self._folder = settings.recordings_dir
        self._data_dir = settings.data_dir
        self._keyring_path = settings.keyring_path
        self._retention_days = settings.retention_days
        self._repo = RecordingsRepo(db)
        self._clock = clock
        self._settle = settle_seconds
        # Without a view of who holds files open, what nobody reported complete must be quiet
        # this long before it is sealed (pipeline.open_paths says when that is).
        self._quiet = settings.recordings_quiet_seconds
        self._proc = proc
        # Files AMI or the post-command reported complete: the short settle time is enough.
        self._reported: set[Path] = set()
        self._poll = poll_seconds
        self._wait_limit = wait_limit_seconds
        self._maintenance_every = maintenance_seconds
        self._stop_deadline = stop_deadline_seconds
        self._chunk_size = chunk_size
        # One file at a time: bounded CPU next to the PBX, and no two jobs on one recording.
        # Across processes, the folder's flock (see _folder_locked) does the same.
        self._file_lock = asyncio.Lock()
        self._waiting: dict[Path, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._keyring_reported: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the keyring, then sweep and enforce retention in the background, periodically."""
        self._stopping = False
        if not self._folder.is_dir():
            log.warning(
                "recordings: folder %s does not exist; nothing to seal until it appears",
                self._folder,
            )
        try:
            await self._ring()
        except KeyringError as exc:
            await self._keyring_problem(exc)
        try:
            await self.recover_interrupted()
        except (TrustlineError, OSError) as exc:
            log.warning(
                "recordings: could not check for interrupted decryptions: %s", _describe(exc)
            )
        self._spawn(self._maintenance_loop())

    async def stop(self) -> None:
        """Stop scheduling; let a file being sealed finish (up to a deadline), cancel waits."""
        self._stopping = True
        pending = [*self._tasks, *self._waiting.values()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._in_flight:
            # The shielded step of a file in progress: finishing it is the safe way out, and
            # whatever a deadline cuts short is resolved by the next start-up sweep.
            _, late = await asyncio.wait(self._in_flight, timeout=self._stop_deadline)
            for task in late:
                task.cancel()

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: can recordings be sealed now (keyring present, safe and readable)?

        Synchronous for the readiness probe; the read cannot hang (the keyring is opened
        non-blocking, a FIFO or device is refused) and is a few hundred bytes.
        """
        try:
            ring = self._load_ring()
        except KeyringError as exc:
            return False, f"recordings: {exc}"
        return True, f"recordings: keyring ok, active key {ring.active_id}"

    async def wait_idle(self) -> None:
        """Wait until every scheduled recording has been handled (tests, orderly shutdown)."""
        while self._waiting:
            await asyncio.gather(*list(self._waiting.values()), return_exceptions=True)

    # -- events ----------------------------------------------------------------------------

    async def on_recording_complete(self, uniqueid: str, filename: str) -> None:
        """AMI says the channel that ran MixMonitor hung up: seal its file once it is closed.

        Returns at once; the wait for the file to settle and the sealing run in the
        background, so the AMI reader never stalls (Asterisk drops slow readers).
        """
        if self._stopping:
            return
        path = self._resolve(filename)
        if path is None:
            log.warning(
                "recordings: %s: file %r is outside %s; not sealing it",
                uniqueid,
                filename,
                self._folder,
            )
            return
        self._reported.add(path)
        self._schedule(path, uniqueid)

    def _schedule(self, path: Path, uniqueid: str | None) -> None:
        if path in self._waiting or self._stopping:
            return
        task = asyncio.create_task(self._seal_when_settled(path, uniqueid))
        self._waiting[path] = task
        task.add_done_callback(lambda _t: self._done_waiting(path))

    def _done_waiting(self, path: Path) -> None:
        self._waiting.pop(path, None)
        self._reported.discard(path)

    async def seal_file(self, filename: str, uniqueid: str | None = None) -> RecordingRow:
        """Seal one recording now (post-command hook, CLI); waits for it to settle first."""
        path = self._resolve(filename)
        if path is None:
            raise BadRequest(f"{filename} is not inside the recordings folder {self._folder}")
        if not path.exists() and pipeline.sealed_path(path).exists():
            row = await self._repo.live_by_path(str(pipeline.sealed_path(path)))
            if row is not None:
                return row
        if not path.exists():
            raise BadRequest(f"{path} does not exist")
        await self._wait_settled(path, reported=True)
        ring = await self._ring()
        return await self._seal(path, uniqueid or pipeline.uniqueid_from_name(path.name), ring)

    def handoff_server(self) -> handoff.HandoffServer:
        """The socket the MixMonitor post-command hands finished recordings to (not started)."""
        return handoff.HandoffServer(
            self._data_dir / handoff.SOCKET_NAME, self._seal_handed_off, handoff_kind
        )

    async def _seal_handed_off(self, filename: str, uniqueid: str | None) -> int:
        row = await self.seal_file(filename, uniqueid)
        log.info(
            "recordings: post-command handed over %s (recording %d)", Path(row.path).name, row.id
        )
        return row.id

    # -- sweep and retention ---------------------------------------------------------------

    async def sweep(self, *, at_startup: bool = True) -> SweepReport:
        """Seal every settled plaintext in the folder; resolve what a crash left behind."""
        report = SweepReport()
        if not self._folder.is_dir():
            report.problem = f"recordings folder {self._folder} does not exist"
            return report
        try:
            ring = await self._ring()
        except KeyringError as exc:
            await self._keyring_problem(exc)
            report.problem = str(exc)
            return report
        async with self._folder_locked():
            # At start-up no temp file can be ours in progress, and under the folder lock no
            # other process's either; later, only stale ones go.
            found = await asyncio.to_thread(
                pipeline.survey,
                self._folder.resolve(),
                self._settle,
                self._quiet,
                None if at_startup else 3600.0,
                self._proc,
            )
        report.temps_removed = len(found.removed_temps)
        for tmp in found.removed_temps:
            log.info("recordings: removed unfinished temp file %s", tmp)
        if not found.sees_writers and found.busy:
            log.info(
                "recordings: cannot see which files Asterisk holds open (/proc); %d recordings"
                " nobody reported complete wait until unchanged for %.0f s",
                len(found.busy),
                self._quiet,
            )
        for plain in found.busy:
            # Still being written (a call in progress at start-up, whose VarSet we missed), or
            # not known not to be: wait for it like for an AMI hand-off.
            report.busy += 1
            self._schedule(plain, pipeline.uniqueid_from_name(plain.name))
        for plain in found.ready:
            if self._stopping:
                break
            if plain in self._waiting:
                report.busy += 1
                continue
            try:
                await self._seal(plain, pipeline.uniqueid_from_name(plain.name), ring)
                report.sealed += 1
            except (TrustlineError, OSError) as exc:
                report.failed += 1
                log.error("recordings: could not seal %s: %s", plain, _describe(exc))
        live = await self._repo.live_paths()
        for aside in found.rejected:
            if str(aside) in live or self._stopping:
                continue
            try:
                await self._record_rejected(pipeline.rejected_origin(aside), aside, moved_now=False)
                report.rejected += 1
            except (TrustlineError, OSError) as exc:
                report.failed += 1
                log.error("recordings: could not list set-aside file %s: %s", aside, _describe(exc))
        plain_set = set(found.ready) | set(found.busy)
        for sealed in found.sealed:
            if self._stopping:
                break
            if str(sealed) in live or pipeline.plain_path(sealed) in plain_set:
                continue
            try:
                if await self._shielded(self._locked(self._adopt(sealed, ring))):
                    report.adopted += 1
            except (TrustlineError, OSError) as exc:
                report.failed += 1
                log.error(
                    "recordings: sealed file %s has no metadata and does not verify: %s",
                    sealed,
                    _describe(exc),
                )
        if report.sealed or report.adopted or report.failed:
            log.info(
                "recordings: sweep sealed %d, adopted %d, waits for %d still being written,"
                " %d failed",
                report.sealed,
                report.adopted,
                report.busy,
                report.failed,
            )
        return report

    async def purge_expired(
        self,
        *,
        operator: str = RETENTION_OPERATOR,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> list[RecordingRow]:
        """Delete sealed recordings older than ``retention_days``; audit each deletion."""
        cutoff = self._clock.now() - self._retention_days * DAY
        rows = await self._repo.recorded_before(cutoff)
        if dry_run:
            return rows
        reason = f"retention: older than {self._retention_days} days"
        purged = []
        for n, row in enumerate(rows, start=1):
            if await self._shielded(self._locked(self._purge_one(row.id, operator, reason))):
                purged.append(row)
            if progress is not None:
                progress(n, len(rows))
        return purged

    async def _purge_one(self, recording_id: int, operator: str, reason: str) -> bool:
        # Under the folder lock: read the row again, a re-wrap may have just changed it.
        row = await self._repo.get(recording_id)
        if row is None or row.purged_at is not None:
            return False
        existed = await asyncio.to_thread(pipeline.delete_sealed, Path(row.path))
        await self._repo.mark_purged(
            row,
            at=self._clock.now(),
            operator=operator,
            reason=reason if existed else reason + " (file was already gone)",
        )
        log.info(
            "recordings: purged recording %d (%s, %s) under retention",
            row.id,
            row.uniqueid,
            row.state,
        )
        return True

    # -- access ----------------------------------------------------------------------------

    async def get(self, recording_id: int) -> RecordingRow:
        row = await self._repo.get(recording_id)
        if row is None:
            raise BadRequest(f"no recording with ID {recording_id}")
        return row

    async def listing(
        self, *, limit: int = 100, include_purged: bool = False
    ) -> list[RecordingRow]:
        return await self._repo.listing(limit=limit, include_purged=include_purged)

    async def audit(self, recording_id: int | None = None) -> list[AuditRow]:
        return await self._repo.audit(recording_id)

    async def keys_in_use(self) -> dict[str, int]:
        return await self._repo.count_by_key()

    async def verify(
        self, ids: list[int] | None = None, progress: Progress | None = None
    ) -> list[VerifyResult]:
        ring = await self._ring()
        rows = [await self.get(i) for i in ids] if ids else await self._repo.live()
        results: list[VerifyResult] = []
        for row in rows:
            if progress is not None and results:
                progress(len(results), len(rows))
            if row.purged_at is not None:
                results.append(VerifyResult(row, "purged"))
                continue
            if row.rejected_at is not None:
                results.append(VerifyResult(row, f"{row.path}: set aside, it does not open"))
                continue
            try:
                await asyncio.to_thread(
                    pipeline.verify,
                    Path(row.path),
                    ring,
                    expected_sha256=row.sha256,
                    pending_sha256=row.pending_sha256,
                )
            except FileNotFoundError:
                results.append(VerifyResult(row, f"{row.path}: file is missing"))
            except (RecordingError, OSError) as exc:
                results.append(VerifyResult(row, _describe(exc)))
            else:
                results.append(VerifyResult(row, None))
        if progress is not None and rows:
            progress(len(rows), len(rows))
        return results

    async def decrypt(
        self,
        recording_id: int,
        out: Path | BinaryIO,
        *,
        operator: str,
        reason: str,
        stop: threading.Event | None = None,
    ) -> RecordingRow:
        """Write one recording's audio to ``out`` (a new file, or a stream such as stdout),
        after recording who, when, which and why. ``stop`` (set by a signal handler) ends it
        early: nothing is left behind and the audit row says ``incomplete``."""
        operator, reason = operator.strip(), reason.strip()
        if not operator:
            raise BadRequest("decrypting needs an operator identity (--operator)")
        if not reason:
            raise BadRequest("decrypting needs a reason (--reason)")
        row = await self.get(recording_id)
        if row.purged_at is not None:
            raise RecordingError(f"recording {recording_id} was deleted by retention")
        if row.rejected_at is not None:
            raise RecordingError(f"recording {recording_id} was set aside: its file does not open")
        if isinstance(out, Path):
            if not out.is_absolute():
                raise BadRequest(f"--out {out} must be an absolute path")
            if self._resolve(str(out)) is not None:
                raise BadRequest(
                    f"--out {out} is inside the recordings folder; plaintext there would be"
                    " sealed again"
                )
        ring = await self._ring()
        where = str(out) if isinstance(out, Path) else "-"
        audit_id = await self._repo.audit_started(
            at=self._clock.now(),
            action="decrypt",
            recording_id=row.id,
            operator=operator,
            reason=reason,
            detail={"out": where, "uniqueid": row.uniqueid, **_os_identity()},
        )
        notes: list[Path] = []
        try:
            if isinstance(out, Path):
                await asyncio.to_thread(
                    pipeline.decrypt_to,
                    Path(row.path),
                    out,
                    ring,
                    expected_sha256=row.sha256,
                    pending_sha256=row.pending_sha256,
                    stop=stop,
                    register_part=lambda part: notes.append(self._register_part(part)),
                )
            else:
                await asyncio.to_thread(
                    pipeline.decrypt_stream_to,
                    Path(row.path),
                    out,
                    ring,
                    expected_sha256=row.sha256,
                    pending_sha256=row.pending_sha256,
                    stop=stop,
                )
        except BaseException as exc:
            interrupted = isinstance(
                exc, (pipeline.Interrupted, asyncio.CancelledError, BrokenPipeError)
            )
            await asyncio.shield(
                self._repo.audit_outcome(
                    audit_id, INCOMPLETE if interrupted else f"failed: {type(exc).__name__}"
                )
            )
            if isinstance(exc, FileNotFoundError) and exc.filename == row.path:
                raise RecordingError(f"{row.path}: file is missing") from None
            if isinstance(exc, OSError):
                raise BadRequest(f"cannot write {where}: {_describe(exc)}") from None
            raise
        finally:
            await asyncio.to_thread(_forget_parts, notes)
        await self._repo.audit_outcome(audit_id, "ok")
        log.info("recordings: recording %d decrypted by %s (audit %d)", row.id, operator, audit_id)
        return row

    async def recover_interrupted(self) -> int:
        """Clean up after decryptions whose process died (SIGKILL): remove any partial audio
        they left and mark their audit rows ``incomplete``. Every recordings command and the
        agent's start run this; returns how many audit rows it closed."""
        await asyncio.to_thread(self._remove_dead_parts)
        closed = 0
        for audit_id, detail in await self._repo.started_audits("decrypt"):
            pid = detail.get("pid")
            if isinstance(pid, int) and not _alive(pid):
                await self._repo.audit_outcome(audit_id, INCOMPLETE)
                closed += 1
        return closed

    def _parts_dir(self) -> Path:
        return self._data_dir / PARTS_DIR

    def _register_part(self, part: Path) -> Path:
        """Note a named partial file before it exists, under this process's id."""
        folder = self._parts_dir()
        folder.mkdir(mode=0o700, exist_ok=True)
        note = folder / f"{os.getpid()}.{part.name}"
        fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(part))
        return note

    def _remove_dead_parts(self) -> None:
        folder = self._parts_dir()
        if not folder.is_dir():
            return
        for note in folder.iterdir():
            pid = note.name.split(".", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            for part in pipeline.remove_parts([Path(note.read_text())]):
                log.warning(
                    "recordings: removed partial audio %s left by a killed decryption", part
                )
            note.unlink(missing_ok=True)

    async def rewrap(self, progress: Progress | None = None) -> RewrapReport:
        """Re-wrap every data key not under the active key; the audio is never re-encrypted."""
        ring = await self._ring()
        rows = await self._repo.not_wrapped_by(ring.active_id)
        report = RewrapReport(total=len(rows))
        for n, row in enumerate(rows, start=1):
            try:
                if await self._shielded(self._locked(self._rewrap_one(row.id, ring))):
                    report.rewrapped += 1
            except (TrustlineError, OSError) as exc:
                report.failures.append(f"recording {row.id}: {_describe(exc)}")
            if progress is not None:
                progress(n, len(rows))
        return report

    async def _rewrap_one(self, recording_id: int, ring: Keyring) -> bool:
        """Re-wrap one file under the folder lock; False if retention took it meanwhile.

        The new SHA-256 is stored as pending before the file is replaced: a crash between the
        replace and the row update leaves a file that still matches its row.
        """
        row = await self._repo.get(recording_id)
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
                await self._repo.set_pending(row.id, prepared.sealed.sha256)
                again = await self._repo.get(row.id)
                if again is None or again.purged_at is not None:
                    return False
                await asyncio.to_thread(pipeline.commit_rewrap, prepared)
        finally:
            await asyncio.to_thread(pipeline.discard_rewrap, prepared)
        new = prepared.sealed
        await self._repo.rewrapped(row.id, key_id=new.key_id, sha256=new.sha256, size=new.size)
        return True

    # -- internals -------------------------------------------------------------------------

    def _load_ring(self) -> Keyring:
        check_location(self._keyring_path, self._folder)
        return load_keyring(self._keyring_path)

    async def _ring(self) -> Keyring:
        return await asyncio.to_thread(self._load_ring)

    @asynccontextmanager
    async def _folder_locked(self) -> AsyncIterator[None]:
        """This process's lock, then the folder's flock (shared with the CLI, post-command).

        Polled without blocking, so waiting for another process never ties up a thread and
        stays cancellable.
        """
        async with self._file_lock:
            try:
                fd = await asyncio.to_thread(pipeline.open_folder_lock, self._folder.resolve())
            except FileNotFoundError:
                yield  # no folder: no file to race over
                return
            try:
                while True:
                    if pipeline.try_lock(fd):
                        break
                    await asyncio.sleep(0.02)
                yield
            finally:
                os.close(fd)

    async def _locked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` under the folder lock; shielded by callers, so the lock goes with it."""
        try:
            async with self._folder_locked():
                return await coro
        finally:
            coro.close()  # never started (cancelled while waiting): no "never awaited" warning

    async def _keyring_problem(self, exc: KeyringError) -> None:
        """No usable keyring: an error if there are recordings to protect, else a hint.

        A keyring that was never created, with no recording in the folder, means recordings
        are simply not in use: a warning says how to enable them, not an ERROR on every start.
        """
        missing = not await asyncio.to_thread(os.path.lexists, self._keyring_path)
        if missing and not await asyncio.to_thread(self._has_recordings):
            self._report_keyring(
                f"not in use: no keyring at {self._keyring_path} and no recording in"
                f" {self._folder}; to encrypt MixMonitor recordings at rest, run `trustline"
                " keys init` (and set TRUSTLINE_RECORDINGS_DIR to MixMonitor's folder)",
                in_use=False,
            )
            return
        self._report_keyring(str(exc))

    def _has_recordings(self) -> bool:
        if not self._folder.is_dir():
            return False
        found = pipeline.scan(self._folder)
        return bool(found.plaintexts or found.sealed or found.rejected)

    def _report_keyring(self, message: str, *, in_use: bool = True) -> None:
        # Once per distinct problem: an hourly sweep must not fill the log with the same line.
        if message != self._keyring_reported:
            self._keyring_reported = message
            if not in_use:
                log.warning("recordings: %s", message)
                return
            log.error("recordings: %s; recordings stay in plaintext until this is fixed", message)

    def _resolve(self, filename: str) -> Path | None:
        """The recording's path if it lies inside the recordings folder, else None."""
        path = Path(filename)
        if not path.is_absolute():
            path = self._folder / path
        folder = self._folder.resolve()
        resolved = path.parent.resolve() / path.name
        try:
            resolved.relative_to(folder)
        except ValueError:
            return None
        return resolved

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a file step to its end even if our caller is cancelled (stop() waits for it)."""
        task = asyncio.ensure_future(coro)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        return await asyncio.shield(task)

    async def _maintenance_loop(self) -> None:
        at_startup = True
        while not self._stopping:
            try:
                await self.sweep(at_startup=at_startup)
                at_startup = False
                await self.purge_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recordings: maintenance pass failed; retrying later")
            await asyncio.sleep(self._maintenance_every)

    async def _seal_when_settled(self, path: Path, uniqueid: str | None) -> None:
        try:
            await self._wait_settled(path)
            ring = await self._ring()
            await self._seal(path, uniqueid, ring)
        except asyncio.CancelledError:
            raise
        except KeyringError as exc:
            self._report_keyring(str(exc))
        except BadRequest as exc:
            log.warning("recordings: %s: %s", uniqueid or path.name, exc)
        except (TrustlineError, OSError) as exc:
            log.error(
                "recordings: %s: could not seal %s: %s", uniqueid or path.name, path, _describe(exc)
            )

    async def _wait_settled(self, path: Path, *, reported: bool = False) -> None:
        waited = 0.0
        while True:
            state = await asyncio.to_thread(
                pipeline.settle_state,
                path,
                self._settle,
                quiet_seconds=self._quiet,
                reported=reported or path in self._reported,
                proc=self._proc,
            )
            if state in ("ready", "sealed"):
                return  # "sealed": done meanwhile (a sweep, the post-command hook)
            if state == "missing" and waited >= max(self._settle, 5.0):
                raise BadRequest(f"recording {path} never appeared")
            if waited >= self._wait_limit:
                raise BadRequest(
                    f"{path} is still being written after {waited:.0f} s; the next"
                    " sweep will seal it"
                )
            await asyncio.sleep(self._poll)
            waited += self._poll

    async def _seal(self, plain: Path, uniqueid: str | None, ring: Keyring) -> RecordingRow:
        # The lock, the thread step and the metadata write finish even if we are cancelled: a
        # file sealed but unrecorded would otherwise wait for the next start to be adopted.
        return await self._shielded(self._locked(self._seal_and_record(plain, uniqueid, ring)))

    async def _seal_and_record(
        self, plain: Path, uniqueid: str | None, ring: Keyring
    ) -> RecordingRow:
        if not await asyncio.to_thread(plain.exists):
            # Sealed meanwhile (the sweep, the post-command, another process).
            row = await self._repo.live_by_path(str(pipeline.sealed_path(plain)))
            if row is not None:
                return row
            raise BadRequest(f"recording {plain} is gone")
        sealed = await asyncio.to_thread(pipeline.seal, plain, ring, chunk_size=self._chunk_size)
        if sealed.set_aside is not None:
            log.warning(
                "recordings: %s did not open and was moved aside as %s; the plaintext"
                " was sealed again",
                sealed.path.name,
                sealed.set_aside.name,
            )
            await self._record_rejected(sealed.path, sealed.set_aside, moved_now=True)
        if sealed.displaced_by is not None:
            log.warning(
                "recordings: %s already holds another recording; %s sealed as %s",
                sealed.displaced_by.name,
                plain.name,
                sealed.path.name,
            )
        row_id = await self._record(sealed, uniqueid, plain)
        # Only now, with a verified sealed file and its metadata stored, may the plaintext go.
        await asyncio.to_thread(pipeline.remove_plaintext, plain)
        log.info(
            "recordings: sealed %s as recording %d (key %s)", plain.name, row_id, sealed.key_id
        )
        row = await self._repo.get(row_id)
        assert row is not None
        return row

    async def _adopt(self, sealed_file: Path, ring: Keyring) -> bool:
        if await self._repo.live_by_path(str(sealed_file)) is not None:
            return False  # recorded meanwhile (another process)
        if not await asyncio.to_thread(sealed_file.exists):
            return False  # retention, or a re-seal that set it aside
        sealed = await asyncio.to_thread(pipeline.verify, sealed_file, ring)
        row_id = await self._record(
            sealed, pipeline.uniqueid_from_name(sealed_file.name), pipeline.plain_path(sealed_file)
        )
        log.info(
            "recordings: recorded metadata of sealed file %s as recording %d",
            sealed_file.name,
            row_id,
        )
        return True

    async def _record_rejected(self, original: Path, aside: Path, *, moved_now: bool) -> int:
        info = await asyncio.to_thread(pipeline.describe, aside)
        plain = pipeline.plain_path(original)
        return await self._repo.record_rejected(
            original=str(original),
            aside=str(aside),
            at=self._clock.now(),
            uniqueid=pipeline.uniqueid_from_name(original.name),
            source_name=self._source_name(plain),
            recorded_at=info.recorded_at,
            size=info.size,
            sha256=info.sha256,
            moved_now=moved_now,
        )

    def _source_name(self, plain: Path) -> str:
        try:
            return str(plain.relative_to(self._folder.resolve()))
        except ValueError:
            return plain.name

    async def _record(self, sealed: pipeline.Sealed, uniqueid: str | None, plain: Path) -> int:
        return await self._repo.record_sealed(
            uniqueid=uniqueid,
            path=str(sealed.path),
            source_name=self._source_name(plain),
            recorded_at=sealed.recorded_at,
            sealed_at=self._clock.now(),
            plain_size=sealed.plain_size,
            size=sealed.size,
            key_id=sealed.key_id,
            sha256=sealed.sha256,
        )


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


def _forget_parts(notes: list[Path]) -> None:
    """A decryption ended: its partial file (if any) and the note about it go."""
    for note in notes:
        pipeline.remove_parts([Path(note.read_text())])
        note.unlink(missing_ok=True)


def handoff_kind(exc: BaseException) -> str | None:
    """How a hand-off failure is reported to the post-command (its exit code follows)."""
    for kind, name in (
        (BadRequest, "usage"),
        (KeyringError, "keyring"),
        (RecordingError, "recording"),
        (TrustlineError, "error"),
        (OSError, "io"),
    ):
        if isinstance(exc, kind):
            return name
    return None


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (then its decryption may still be running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(exc: BaseException) -> str:
    """An error for a log line or a report: our messages as they are, OS errors by errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)
