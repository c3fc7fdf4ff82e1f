"""Retention: delete sealed recordings older than ``retention_days``, one audited row each.

May: delete a sealed file under the folder lock and mark its row purged with an audit row.
Must not: delete a plaintext, or a recording younger than the retention period.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from agent.recordings import pipeline
from agent.recordings.repo import RecordingRow
from agent.recordings.runtime import LOGGER, Progress, Runtime

log = logging.getLogger(LOGGER)

DAY = 86400.0
RETENTION_OPERATOR = "retention"


async def purge_expired(
    rt: Runtime,
    retention_days: int,
    *,
    operator: str,
    dry_run: bool,
    progress: Progress | None,
) -> list[RecordingRow]:
    """Delete sealed recordings older than ``retention_days``; audit each deletion."""
    cutoff = rt.clock.now() - retention_days * DAY
    rows = await rt.repo.recorded_before(cutoff)
    if dry_run:
        return rows
    reason = f"retention: older than {retention_days} days"
    purged = []
    for n, row in enumerate(rows, start=1):
        if await rt.step(_purge_one(rt, row.id, operator, reason)):
            purged.append(row)
        if progress is not None:
            progress(n, len(rows))
    return purged


async def _purge_one(rt: Runtime, recording_id: int, operator: str, reason: str) -> bool:
    # Under the folder lock: read the row again, a re-wrap may have just changed it.
    row = await rt.repo.get(recording_id)
    if row is None or row.purged_at is not None:
        return False
    existed = await asyncio.to_thread(pipeline.delete_sealed, Path(row.path))
    await rt.repo.mark_purged(
        row,
        at=rt.clock.now(),
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
