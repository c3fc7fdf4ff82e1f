"""RecordingsService: the use cases of recordings at rest, for the agent and the CLI.

May: schedule sealing when AMI reports a recording complete, sweep the recordings folder,
enforce retention, verify, decrypt for a named operator with a reason (audited; a decryption
cut short leaves no audio and an ``incomplete`` audit row), re-wrap data keys after a
rotation, seal what the post-command hands over its socket (``handoff``). Blocking file and
crypto work runs in a worker thread, one file at a time, so the event loop (and the FastAGI
deadline) never waits on a disk or a cipher. Every
step that creates, replaces or deletes a sealed file holds the recordings folder's flock, so
the agent, the CLI and the post-command never act on one file at once.
This class is the facade: each job lives in its own module (``sealing``, ``sweep``,
``retention``, ``access``) over the state they share (``runtime``).
Must not: create a keyring (``trustline keys init`` does, on purpose), touch a file outside
the recordings folder, log key material or anything read from a recording, or decide who may
decrypt (edges check roles; this service insists on an operator and a reason and audits).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO

from agent.clock import Clock
from agent.errors import BadRequest, KeyringError, RecordingError, TrustlineError
from agent.recordings import access, handoff, retention
from agent.recordings import format as fmt
from agent.recordings.access import INCOMPLETE, PARTS_DIR, RewrapReport, VerifyResult
from agent.recordings.repo import AuditRow, RecordingRow
from agent.recordings.retention import DAY, RETENTION_OPERATOR
from agent.recordings.runtime import LOGGER, Progress, Runtime, describe_error
from agent.recordings.sealing import Sealer
from agent.recordings.sweep import SweepReport, run_sweep
from agent.settings import Settings
from agent.store import Database

__all__ = [
    "DAY",
    "INCOMPLETE",
    "PARTS_DIR",
    "RETENTION_OPERATOR",
    "Progress",
    "RecordingsService",
    "RewrapReport",
    "SweepReport",
    "VerifyResult",
    "handoff_kind",
]

log = logging.getLogger(LOGGER)


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
        self._rt = Runtime(settings, db, clock)
        self._retention_days = settings.retention_days
        self._sealer = Sealer(
            self._rt,
            settle_seconds=settle_seconds,
            quiet_seconds=settings.recordings_quiet_seconds,
            poll_seconds=poll_seconds,
            wait_limit_seconds=wait_limit_seconds,
            chunk_size=chunk_size,
            proc=proc,
        )
        self._maintenance_every = maintenance_seconds
        self._stop_deadline = stop_deadline_seconds
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the keyring, then sweep and enforce retention in the background, periodically."""
        self._rt.stopping = False
        if not self._rt.folder.is_dir():
            log.warning(
                "recordings: folder %s does not exist; nothing to seal until it appears",
                self._rt.folder,
            )
        try:
            await self._rt.ring()
        except KeyringError as exc:
            await self._rt.keyring_problem(exc)
        try:
            await self.recover_interrupted()
        except (TrustlineError, OSError) as exc:
            log.warning(
                "recordings: could not check for interrupted decryptions: %s", describe_error(exc)
            )
        self._spawn(self._maintenance_loop())

    async def stop(self) -> None:
        """Stop scheduling; let a file being sealed finish (up to a deadline), cancel waits."""
        self._rt.stopping = True
        pending = [*self._tasks, *self._sealer.waiting.values()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._rt.in_flight:
            # The shielded step of a file in progress: finishing it is the safe way out, and
            # whatever a deadline cuts short is resolved by the next start-up sweep.
            _, late = await asyncio.wait(self._rt.in_flight, timeout=self._stop_deadline)
            for task in late:
                task.cancel()

    def readiness(self) -> tuple[bool, str]:
        """For /readyz: can recordings be sealed now (keyring present, safe and readable)?

        Synchronous for the readiness probe; the read cannot hang (the keyring is opened
        non-blocking, a FIFO or device is refused) and is a few hundred bytes.
        """
        try:
            ring = self._rt.load_ring()
        except KeyringError as exc:
            return False, f"recordings: {exc}"
        return True, f"recordings: keyring ok, active key {ring.active_id}"

    async def wait_idle(self) -> None:
        """Wait until every scheduled recording has been handled (tests, orderly shutdown)."""
        await self._sealer.wait_idle()

    # -- sealing ---------------------------------------------------------------------------

    async def on_recording_complete(self, uniqueid: str, filename: str) -> None:
        """AMI says the channel that ran MixMonitor hung up: seal its file once it is closed.

        Returns at once; the wait for the file to settle and the sealing run in the
        background, so the AMI reader never stalls (Asterisk drops slow readers).
        """
        if self._rt.stopping:
            return
        path = self._rt.resolve(filename)
        if path is None:
            log.warning(
                "recordings: %s: file %r is outside %s; not sealing it",
                uniqueid,
                filename,
                self._rt.folder,
            )
            return
        self._sealer.reported_complete(path, uniqueid)

    async def seal_file(self, filename: str, uniqueid: str | None = None) -> RecordingRow:
        """Seal one recording now (post-command hook, CLI); waits for it to settle first."""
        return await self._sealer.seal_file(filename, uniqueid)

    def handoff_server(self) -> handoff.HandoffServer:
        """The socket the MixMonitor post-command hands finished recordings to (not started)."""
        return handoff.HandoffServer(
            self._rt.data_dir / handoff.SOCKET_NAME, self._seal_handed_off, handoff_kind
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
        return await run_sweep(self._rt, self._sealer, at_startup=at_startup)

    async def purge_expired(
        self,
        *,
        operator: str = RETENTION_OPERATOR,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> list[RecordingRow]:
        """Delete sealed recordings older than ``retention_days``; audit each deletion."""
        return await retention.purge_expired(
            self._rt, self._retention_days, operator=operator, dry_run=dry_run, progress=progress
        )

    # -- access ----------------------------------------------------------------------------

    async def get(self, recording_id: int) -> RecordingRow:
        return await access.get(self._rt, recording_id)

    async def listing(
        self, *, limit: int = 100, include_purged: bool = False
    ) -> list[RecordingRow]:
        return await self._rt.repo.listing(limit=limit, include_purged=include_purged)

    async def audit(self, recording_id: int | None = None) -> list[AuditRow]:
        return await self._rt.repo.audit(recording_id)

    async def keys_in_use(self) -> dict[str, int]:
        return await self._rt.repo.count_by_key()

    async def verify(
        self, ids: list[int] | None = None, progress: Progress | None = None
    ) -> list[VerifyResult]:
        return await access.verify(self._rt, ids, progress)

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
        return await access.decrypt(
            self._rt, recording_id, out, operator=operator, reason=reason, stop=stop
        )

    async def recover_interrupted(self) -> int:
        """Clean up after decryptions whose process died (SIGKILL): remove any partial audio
        they left and mark their audit rows ``incomplete``. Every recordings command and the
        agent's start run this; returns how many audit rows it closed."""
        return await access.recover_interrupted(self._rt)

    async def rewrap(self, progress: Progress | None = None) -> RewrapReport:
        """Re-wrap every data key not under the active key; the audio is never re-encrypted."""
        return await access.rewrap(self._rt, progress)

    # -- internals -------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _maintenance_loop(self) -> None:
        at_startup = True
        while not self._rt.stopping:
            try:
                await self.sweep(at_startup=at_startup)
                at_startup = False
                await self.purge_expired()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recordings: maintenance pass failed; retrying later")
            await asyncio.sleep(self._maintenance_every)


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
