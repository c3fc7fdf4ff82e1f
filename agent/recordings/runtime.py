"""What every recordings job shares: the folder, the keyring, the store and the locks.

May: load the keyring (in a worker thread for the event loop), hold this process's lock and
the folder's flock around a file step, shield a file step so it finishes even when its caller
is cancelled (``stop`` waits for it), report a keyring problem once, and say whether a path
lies inside the recordings folder.
Must not: seal, delete or decrypt anything itself (the job modules do, through ``pipeline``),
or log key material or anything read from a recording.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from agent.clock import Clock
from agent.errors import KeyringError
from agent.recordings import pipeline
from agent.recordings.keyring import Keyring, check_location, load_keyring
from agent.recordings.repo import RecordingsRepo
from agent.settings import Settings
from agent.store import Database

# Every job module logs as the service did before it was split: operators' filters still work.
LOGGER = "agent.recordings.service"
log = logging.getLogger(LOGGER)

Progress = Callable[[int, int], None]
T = TypeVar("T")


class Runtime:
    """The state the sealing, sweep, retention and access jobs of one service share."""

    def __init__(self, settings: Settings, db: Database, clock: Clock) -> None:
        self.folder = settings.recordings_dir
        self.data_dir = settings.data_dir
        self.keyring_path = settings.keyring_path
        self.repo = RecordingsRepo(db)
        self.clock = clock
        self.stopping = False
        # One file at a time: bounded CPU next to the PBX, and no two jobs on one recording.
        # Across processes, the folder's flock (see folder_locked) does the same.
        self._file_lock = asyncio.Lock()
        self.in_flight: set[asyncio.Task[Any]] = set()
        self._keyring_reported: str | None = None

    # -- the keyring -----------------------------------------------------------------------

    def load_ring(self) -> Keyring:
        check_location(self.keyring_path, self.folder)
        return load_keyring(self.keyring_path)

    async def ring(self) -> Keyring:
        return await asyncio.to_thread(self.load_ring)

    async def keyring_problem(self, exc: KeyringError) -> None:
        """No usable keyring: an error if there are recordings to protect, else a hint.

        A keyring that was never created, with no recording in the folder, means recordings
        are simply not in use: a warning says how to enable them, not an ERROR on every start.
        """
        missing = not await asyncio.to_thread(os.path.lexists, self.keyring_path)
        if missing and not await asyncio.to_thread(self._has_recordings):
            self.report_keyring(
                f"not in use: no keyring at {self.keyring_path} and no recording in"
                f" {self.folder}; to encrypt MixMonitor recordings at rest, run `trustline"
                " keys init` (and set TRUSTLINE_RECORDINGS_DIR to MixMonitor's folder)",
                in_use=False,
            )
            return
        self.report_keyring(str(exc))

    def _has_recordings(self) -> bool:
        if not self.folder.is_dir():
            return False
        found = pipeline.scan(self.folder)
        return bool(found.plaintexts or found.sealed or found.rejected)

    def report_keyring(self, message: str, *, in_use: bool = True) -> None:
        # Once per distinct problem: an hourly sweep must not fill the log with the same line.
        if message != self._keyring_reported:
            self._keyring_reported = message
            if not in_use:
                log.warning("recordings: %s", message)
                return
            log.error("recordings: %s; recordings stay in plaintext until this is fixed", message)

    # -- locks and shields -----------------------------------------------------------------

    @asynccontextmanager
    async def folder_locked(self) -> AsyncIterator[None]:
        """This process's lock, then the folder's flock (shared with the CLI, post-command).

        Polled without blocking, so waiting for another process never ties up a thread and
        stays cancellable.
        """
        async with self._file_lock:
            try:
                fd = await asyncio.to_thread(pipeline.open_folder_lock, self.folder.resolve())
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

    async def locked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` under the folder lock; shielded by callers, so the lock goes with it."""
        try:
            async with self.folder_locked():
                return await coro
        finally:
            coro.close()  # never started (cancelled while waiting): no "never awaited" warning

    async def shielded(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a file step to its end even if our caller is cancelled (stop() waits for it)."""
        task = asyncio.ensure_future(coro)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return await asyncio.shield(task)

    async def step(self, coro: Coroutine[Any, Any, T]) -> T:
        """A file step under the folder lock, run to its end (see ``locked``, ``shielded``)."""
        return await self.shielded(self.locked(coro))

    # -- paths -----------------------------------------------------------------------------

    def resolve(self, filename: str) -> Path | None:
        """The recording's path if it lies inside the recordings folder, else None."""
        path = Path(filename)
        if not path.is_absolute():
            path = self.folder / path
        folder = self.folder.resolve()
        resolved = path.parent.resolve() / path.name
        try:
            resolved.relative_to(folder)
        except ValueError:
            return None
        return resolved

    def source_name(self, plain: Path) -> str:
        try:
            return str(plain.relative_to(self.folder.resolve()))
        except ValueError:
            return plain.name


def describe_error(exc: BaseException) -> str:
    """An error for a log line or a report: our messages as they are, OS errors by errno."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)
