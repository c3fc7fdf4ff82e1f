"""The sweep: seal every settled plaintext in the folder and resolve what a crash left behind.

May: remove our own unfinished temp files (all at start-up, stale ones later), schedule
files still being written, seal the settled ones, list set-aside files found without a row,
and adopt sealed files found without metadata once they verify.
Must not: seal a file still being written, or delete anything but our own temp files (the
sealing step alone removes a plaintext, once its sealed copy is verified and recorded).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agent.errors import KeyringError, TrustlineError
from agent.recordings import pipeline
from agent.recordings.keyring import Keyring
from agent.recordings.runtime import LOGGER, Runtime, describe_error
from agent.recordings.sealing import Sealer

log = logging.getLogger(LOGGER)

STALE_TEMP_SECONDS = 3600.0  # after start-up, a temp file this old is no step in progress


@dataclass
class SweepReport:
    sealed: int = 0
    adopted: int = 0  # sealed files found without metadata, verified and recorded
    busy: int = 0  # still being written (or not known not to be): left for later
    rejected: int = 0  # set-aside files found without a row, now listed
    failed: int = 0
    temps_removed: int = 0
    problem: str | None = None  # why the sweep did not run (no folder, no keyring)


async def run_sweep(rt: Runtime, sealer: Sealer, *, at_startup: bool) -> SweepReport:
    """Seal every settled plaintext in the folder; resolve what a crash left behind."""
    report = SweepReport()
    if not rt.folder.is_dir():
        report.problem = f"recordings folder {rt.folder} does not exist"
        return report
    try:
        ring = await rt.ring()
    except KeyringError as exc:
        await rt.keyring_problem(exc)
        report.problem = str(exc)
        return report
    found = await _survey(rt, sealer, at_startup, report)
    for plain in found.busy:
        # Still being written (a call in progress at start-up, whose VarSet we missed), or
        # not known not to be: wait for it like for an AMI hand-off.
        report.busy += 1
        sealer.schedule(plain, pipeline.uniqueid_from_name(plain.name))
    await _seal_ready(rt, sealer, found, ring, report)
    live = await rt.repo.live_paths()
    await _list_rejected(rt, sealer, found, live, report)
    await _adopt_unrecorded(rt, sealer, found, live, ring, report)
    if report.sealed or report.adopted or report.failed:
        log.info(
            "recordings: sweep sealed %d, adopted %d, waits for %d still being written, %d failed",
            report.sealed,
            report.adopted,
            report.busy,
            report.failed,
        )
    return report


async def _survey(
    rt: Runtime, sealer: Sealer, at_startup: bool, report: SweepReport
) -> pipeline.Survey:
    async with rt.folder_locked():
        # At start-up no temp file can be ours in progress, and under the folder lock no
        # other process's either; later, only stale ones go.
        found = await asyncio.to_thread(
            pipeline.survey,
            rt.folder.resolve(),
            sealer.settle,
            sealer.quiet,
            None if at_startup else STALE_TEMP_SECONDS,
            sealer.proc,
        )
    report.temps_removed = len(found.removed_temps)
    for tmp in found.removed_temps:
        log.info("recordings: removed unfinished temp file %s", tmp)
    if not found.sees_writers and found.busy:
        log.info(
            "recordings: cannot see which files Asterisk holds open (/proc); %d recordings"
            " nobody reported complete wait until unchanged for %.0f s",
            len(found.busy),
            sealer.quiet,
        )
    return found


async def _seal_ready(
    rt: Runtime, sealer: Sealer, found: pipeline.Survey, ring: Keyring, report: SweepReport
) -> None:
    for plain in found.ready:
        if rt.stopping:
            break
        if plain in sealer.waiting:
            report.busy += 1
            continue
        try:
            await sealer.seal(plain, pipeline.uniqueid_from_name(plain.name), ring)
            report.sealed += 1
        except (TrustlineError, OSError) as exc:
            report.failed += 1
            log.error("recordings: could not seal %s: %s", plain, describe_error(exc))


async def _list_rejected(
    rt: Runtime, sealer: Sealer, found: pipeline.Survey, live: set[str], report: SweepReport
) -> None:
    for aside in found.rejected:
        if str(aside) in live or rt.stopping:
            continue
        try:
            await sealer.record_rejected(pipeline.rejected_origin(aside), aside, moved_now=False)
            report.rejected += 1
        except (TrustlineError, OSError) as exc:
            report.failed += 1
            log.error(
                "recordings: could not list set-aside file %s: %s", aside, describe_error(exc)
            )


async def _adopt_unrecorded(
    rt: Runtime,
    sealer: Sealer,
    found: pipeline.Survey,
    live: set[str],
    ring: Keyring,
    report: SweepReport,
) -> None:
    plain_set = set(found.ready) | set(found.busy)
    for sealed in found.sealed:
        if rt.stopping:
            break
        if str(sealed) in live or pipeline.plain_path(sealed) in plain_set:
            continue
        try:
            if await rt.step(sealer.adopt(sealed, ring)):
                report.adopted += 1
        except (TrustlineError, OSError) as exc:
            report.failed += 1
            log.error(
                "recordings: sealed file %s has no metadata and does not verify: %s",
                sealed,
                describe_error(exc),
            )
