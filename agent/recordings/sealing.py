"""Sealing: wait for a recording to be complete, seal it, record its metadata, drop the plaintext.

May: wait (in the background, cancellably) for a file AMI or the post-command reported
complete, seal one file at a time under the folder lock, record a sealed file found without
metadata once it verifies (adopt), list a set-aside file that does not open.
Must not: remove a plaintext before its sealed copy is verified and its row stored, or act on
a file outside the recordings folder.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from agent.errors import BadRequest, KeyringError, TrustlineError
from agent.recordings import pipeline
from agent.recordings.keyring import Keyring
from agent.recordings.repo import RecordingRow
from agent.recordings.runtime import LOGGER, Runtime, describe_error

log = logging.getLogger(LOGGER)


class Sealer:
    """Seals recordings of one service: scheduled waits, the seal step, adoption."""

    def __init__(
        self,
        rt: Runtime,
        *,
        settle_seconds: float,
        quiet_seconds: float,
        poll_seconds: float,
        wait_limit_seconds: float,
        chunk_size: int,
        proc: Path,
    ) -> None:
        self._rt = rt
        self.settle = settle_seconds
        # Without a view of who holds files open, what nobody reported complete must be quiet
        # this long before it is sealed (pipeline.open_paths says when that is).
        self.quiet = quiet_seconds
        self.proc = proc
        self._poll = poll_seconds
        self._wait_limit = wait_limit_seconds
        self._chunk_size = chunk_size
        # Files AMI or the post-command reported complete: the short settle time is enough.
        self._reported: set[Path] = set()
        self.waiting: dict[Path, asyncio.Task[None]] = {}

    # -- scheduling ------------------------------------------------------------------------

    def reported_complete(self, path: Path, uniqueid: str | None) -> None:
        """Someone said ``path`` is complete: seal it once it settles, in the background."""
        self._reported.add(path)
        self.schedule(path, uniqueid)

    def schedule(self, path: Path, uniqueid: str | None) -> None:
        if path in self.waiting or self._rt.stopping:
            return
        task = asyncio.create_task(self._seal_when_settled(path, uniqueid))
        self.waiting[path] = task
        task.add_done_callback(lambda _t: self._done_waiting(path))

    def _done_waiting(self, path: Path) -> None:
        self.waiting.pop(path, None)
        self._reported.discard(path)

    async def wait_idle(self) -> None:
        while self.waiting:
            await asyncio.gather(*list(self.waiting.values()), return_exceptions=True)

    async def _seal_when_settled(self, path: Path, uniqueid: str | None) -> None:
        try:
            await self._wait_settled(path)
            ring = await self._rt.ring()
            await self.seal(path, uniqueid, ring)
        except asyncio.CancelledError:
            raise
        except KeyringError as exc:
            self._rt.report_keyring(str(exc))
        except BadRequest as exc:
            log.warning("recordings: %s: %s", uniqueid or path.name, exc)
        except (TrustlineError, OSError) as exc:
            log.error(
                "recordings: %s: could not seal %s: %s",
                uniqueid or path.name,
                path,
                describe_error(exc),
            )

    async def _wait_settled(self, path: Path, *, reported: bool = False) -> None:
        waited = 0.0
        while True:
            state = await asyncio.to_thread(
                pipeline.settle_state,
                path,
                self.settle,
                quiet_seconds=self.quiet,
                reported=reported or path in self._reported,
                proc=self.proc,
            )
            if state in ("ready", "sealed"):
                return  # "sealed": done meanwhile (a sweep, the post-command hook)
            if state == "missing" and waited >= max(self.settle, 5.0):
                raise BadRequest(f"recording {path} never appeared")
            if waited >= self._wait_limit:
                raise BadRequest(
                    f"{path} is still being written after {waited:.0f} s; the next"
                    " sweep will seal it"
                )
            await asyncio.sleep(self._poll)
            waited += self._poll

    # -- sealing now -----------------------------------------------------------------------

    async def seal_file(self, filename: str, uniqueid: str | None) -> RecordingRow:
        """Seal one recording now (post-command hook, CLI); waits for it to settle first."""
        path = self._rt.resolve(filename)
        if path is None:
            raise BadRequest(f"{filename} is not inside the recordings folder {self._rt.folder}")
        if not path.exists() and pipeline.sealed_path(path).exists():
            row = await self._rt.repo.live_by_path(str(pipeline.sealed_path(path)))
            if row is not None:
                return row
        if not path.exists():
            raise BadRequest(f"{path} does not exist")
        await self._wait_settled(path, reported=True)
        ring = await self._rt.ring()
        return await self.seal(path, uniqueid or pipeline.uniqueid_from_name(path.name), ring)

    async def seal(self, plain: Path, uniqueid: str | None, ring: Keyring) -> RecordingRow:
        # The lock, the thread step and the metadata write finish even if we are cancelled: a
        # file sealed but unrecorded would otherwise wait for the next start to be adopted.
        return await self._rt.step(self._seal_and_record(plain, uniqueid, ring))

    async def _seal_and_record(
        self, plain: Path, uniqueid: str | None, ring: Keyring
    ) -> RecordingRow:
        repo = self._rt.repo
        if not await asyncio.to_thread(plain.exists):
            # Sealed meanwhile (the sweep, the post-command, another process).
            row = await repo.live_by_path(str(pipeline.sealed_path(plain)))
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
            await self.record_rejected(sealed.path, sealed.set_aside, moved_now=True)
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
        row = await repo.get(row_id)
        assert row is not None
        return row

    # -- files found without metadata ------------------------------------------------------

    async def adopt(self, sealed_file: Path, ring: Keyring) -> bool:
        """Record a sealed file found without its row, once it verifies; False if not needed."""
        if await self._rt.repo.live_by_path(str(sealed_file)) is not None:
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

    async def record_rejected(self, original: Path, aside: Path, *, moved_now: bool) -> int:
        info = await asyncio.to_thread(pipeline.describe, aside)
        plain = pipeline.plain_path(original)
        return await self._rt.repo.record_rejected(
            original=str(original),
            aside=str(aside),
            at=self._rt.clock.now(),
            uniqueid=pipeline.uniqueid_from_name(original.name),
            source_name=self._rt.source_name(plain),
            recorded_at=info.recorded_at,
            size=info.size,
            sha256=info.sha256,
            moved_now=moved_now,
        )

    async def _record(self, sealed: pipeline.Sealed, uniqueid: str | None, plain: Path) -> int:
        return await self._rt.repo.record_sealed(
            uniqueid=uniqueid,
            path=str(sealed.path),
            source_name=self._rt.source_name(plain),
            recorded_at=sealed.recorded_at,
            sealed_at=self._rt.clock.now(),
            plain_size=sealed.plain_size,
            size=sealed.size,
            key_id=sealed.key_id,
            sha256=sealed.sha256,
            older=sealed.older,
        )
