"""The call audit's write-behind: decisions are answered first, their rows land in batches.

May: queue audit records and last-use hints in memory and write them through
``OutboundRepo.write_audit`` (the owner of call_audit rows). Must not: decide anything or
write SQL of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.tasks import stop_task

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CallContext:
    """What the audit needs when a claim lands after its call was answered otherwise."""

    uniqueid: str
    purpose: str
    pool: str
    callee_hash: str | None
    case_ref: str | None
    audited: bool = True  # False: a reservation for an announced call, not a call

    def audit(self, now: float, number: str | None, status: str, reason: str) -> AuditRecord:
        return AuditRecord(
            now,
            self.uniqueid,
            self.purpose,
            self.pool,
            number,
            status,
            reason,
            self.callee_hash,
            self.case_ref,
        )


class AuditWriter:
    """Write-behind for the call audit: decisions are answered first, rows land in batches.

    A batch is one transaction. ``stop`` flushes what is queued, so a clean shutdown loses
    nothing; a crash may lose the last fraction of a second of audit rows, never a cap count
    (counts are written synchronously by ``claim``).
    """

    # A batch every 0.2 s (or every max_batch rows): one hand-off to the store's thread and one
    # commit per batch, a few per second whatever the call rate.
    def __init__(self, repo: OutboundRepo, *, interval: float = 0.2, max_batch: int = 500) -> None:
        self._repo = repo
        self._interval = interval
        self._max_batch = max_batch
        self._records: list[AuditRecord] = []
        self._last_used: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: AuditRecord) -> None:
        self._records.append(record)
        if record.number and record.status == "ok":
            self._last_used[record.number] = record.at
        if len(self._records) >= self._max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a failed batch is retried on the next tick; the agent keeps serving
                log.exception("audit: could not write a batch; will retry")

    async def flush(self) -> None:
        if not self._records and not self._last_used:
            return
        records, self._records = self._records, []
        last_used, self._last_used = self._last_used, {}
        try:
            await self._repo.write_audit(records, last_used)
        except BaseException:
            self._records[:0] = records
            for number, at in last_used.items():
                self._last_used.setdefault(number, at)
            raise

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush()
