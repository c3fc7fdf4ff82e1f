"""Numbers we called recently, for the callback check, in a fixed amount of memory.

The copy in memory is a table of ``SLOTS`` slots (8 MiB) whatever the call volume: a callee's
keyed hash picks a slot, and the slot keeps the latest time of any call to any callee that
picks it. So a slot older than the window proves that nobody it stands for was called in the
window: most callers are answered from memory alone. A slot inside the window only says
"maybe" (this callee, or another one sharing its slot, was called); the store then answers
exactly, with one indexed look-up (``call_audit (callee_hash, at)``). The answer is the same
as a full copy would give; only memory and the share of look-ups change with volume (at
1.4 million calls in the window, about half of the slots are recent).

The table is loaded once, then followed by row id (SQLite assigns ids in commit order),
refreshed in the background at most every ``SYNC_SECONDS``; a call waits for a refresh only
after a quiet spell (copy older than ``WAIT_SECONDS``) so that an outbound call made just
before is seen, and only if no refresh is running already (a slow store). When the store
fails, the last table keeps serving; a "maybe" that the store cannot confirm gets no
callback credit (credit is only given on proof). Holds times only, never a number or hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import mmap
import zlib

from agent.screening.repo import ScreeningRepo

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0
WAIT_SECONDS = 5.0
SLOTS = 2**21  # 4 bytes each: 8 MiB, flat from the first call to the millionth
_BATCH = 5000
_SLACK = 3600.0


class RecentCallees:
    def __init__(self, repo: ScreeningRepo, slots: int = SLOTS) -> None:
        self._repo = repo
        # Slot -> latest call time (whole seconds, rounded up) of the callees hashing there.
        # Anonymous memory reads as zeros and takes no RAM until a page is written: an agent
        # that has screened no callback does not carry 8 MiB of zeros (a bytearray writes them).
        self._slots = memoryview(mmap.mmap(-1, 4 * slots)).cast("I")
        self._horizon: float | None = None  # calls since this time are all in the table
        self._last_id = 0
        self._folded = 0  # calls folded into the table since it was loaded
        self._synced_at = float("-inf")
        self._task: asyncio.Task[None] | None = None

    async def called_since(self, callee_hash: str, since: float, now: float) -> bool:
        if self._horizon is None or since < self._horizon:
            # First use, or callback_days grew on reload: the table must reach further back.
            await self._sync(since, now, full=True)
        elif now - self._synced_at >= WAIT_SECONDS and (self._task is None or self._task.done()):
            # Only the first call after a quiet spell waits. If a refresh is already running,
            # the store is slow (another writer holds it): joining it would make every call
            # miss its deadline and go unscreened, so the others answer from the table.
            try:
                await self._sync(since, now, full=False)
            except Exception as exc:  # the store is down: answer from the table we have
                log.warning("screening: callback copy not refreshed (%s); using the last one", exc)
        elif now - self._synced_at >= SYNC_SECONDS and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._background(since, now))
        if self._slots[_slot(callee_hash, len(self._slots))] < since:
            return False  # nobody sharing this slot was called in the window
        try:
            latest = await self._repo.latest_call(callee_hash)
        except Exception as exc:  # no proof, no credit
            log.warning("screening: callback not confirmed (%s); no callback credit", exc)
            return False
        return latest is not None and latest >= since

    async def _background(self, since: float, now: float) -> None:
        try:
            await self._follow(now)
        except Exception as exc:  # a background task: nobody else would see it
            log.warning("screening: callback copy not refreshed (%s); using the last one", exc)

    async def _sync(self, since: float, now: float, *, full: bool) -> None:
        # One refresh at a time; a caller that gives up (deadline) does not cancel it for others.
        if self._task is None or self._task.done():
            work = self._load(since, now) if full else self._follow(now)
            self._task = asyncio.get_running_loop().create_task(work)
            await asyncio.shield(self._task)
            return
        await asyncio.shield(self._task)
        if (full and (self._horizon is None or since < self._horizon)) or (
            now - self._synced_at >= WAIT_SECONDS
        ):
            await self._sync(since, now, full=full)

    async def _load(self, since: float, now: float) -> None:
        # Reach an hour further back, so that concurrent calls whose clock read a moment
        # earlier do not each ask for a reload of their own.
        since -= _SLACK
        self._slots[:] = memoryview(bytes(4 * len(self._slots))).cast("I")
        self._last_id = 0
        self._folded = 0
        await self._fold_after(since)
        self._horizon = since
        self._synced_at = now

    async def _follow(self, now: float) -> None:
        await self._fold_after(None)
        self._synced_at = now

    async def _fold_after(self, since: float | None) -> None:
        """Fold every call after row ``_last_id`` (and at or after ``since``) into the table."""
        slots = self._slots
        while True:
            rows = await self._repo.audit_after(self._last_id, _BATCH, since=since)
            for row_id, callee_hash, at in rows:
                self._last_id = row_id
                if callee_hash is not None:
                    slot = _slot(callee_hash, len(slots))
                    stamp = min(math.ceil(at), 0xFFFFFFFF)
                    if stamp > slots[slot]:
                        slots[slot] = stamp
                    self._folded += 1
            if len(rows) < _BATCH:
                break

    async def close(self) -> None:
        """Let a refresh in flight finish (it reads the store, which closes after us)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task

    def __len__(self) -> int:
        """Calls folded into the table since it was loaded (the table's size never changes)."""
        return self._folded


def _slot(callee_hash: str, slots: int) -> int:
    """The slot of a keyed hash (CRC-32 spreads distinct hashes evenly; never raises)."""
    return zlib.crc32(callee_hash.encode()) % slots
