"""Numbers we called recently, as keyed hashes in memory, following ``call_audit``.

A callback check is then a dictionary look-up instead of a store round trip on every inbound
call. The copy is loaded once, then followed by row id (SQLite assigns ids in commit order).
It is refreshed in the background at most every ``SYNC_SECONDS``; a call waits for a refresh
only after a quiet spell (copy older than ``WAIT_SECONDS``) so that an outbound call made
just before is seen, and only if no refresh is running already (a slow store). When the store
fails, the last copy keeps serving. Holds hashes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agent.screening.repo import ScreeningRepo

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0
WAIT_SECONDS = 5.0
_BATCH = 5000
_SLACK = 3600.0


class RecentCallees:
    def __init__(self, repo: ScreeningRepo) -> None:
        self._repo = repo
        self._latest: dict[str, float] = {}  # callee hash -> time of our latest call to it
        self._horizon: float | None = None  # calls since this time are all in the copy
        self._last_id = 0
        self._synced_at = float("-inf")
        self._pruned_size = 0
        self._task: asyncio.Task[None] | None = None

    async def called_since(self, callee_hash: str, since: float, now: float) -> bool:
        if self._horizon is None or since < self._horizon:
            # First use, or callback_days grew on reload: the copy must reach further back.
            await self._sync(since, now, full=True)
        elif now - self._synced_at >= WAIT_SECONDS and (self._task is None or self._task.done()):
            # Only the first call after a quiet spell waits. If a refresh is already running,
            # the store is slow (another writer holds it): joining it would make every call
            # miss its deadline and go unscreened, so the others answer from the copy.
            try:
                await self._sync(since, now, full=False)
            except Exception as exc:  # the store is down: answer from the copy we have
                log.warning("screening: callback copy not refreshed (%s); using the last one", exc)
        elif now - self._synced_at >= SYNC_SECONDS and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._background(since, now))
        return self._latest.get(callee_hash, float("-inf")) >= since

    async def _background(self, since: float, now: float) -> None:
        try:
            await self._follow(since, now)
        except Exception as exc:  # a background task: nobody else would see it
            log.warning("screening: callback copy not refreshed (%s); using the last one", exc)

    async def _sync(self, since: float, now: float, *, full: bool) -> None:
        # One refresh at a time; a caller that gives up (deadline) does not cancel it for others.
        if self._task is None or self._task.done():
            work = self._load(since, now) if full else self._follow(since, now)
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
        last_id = await self._repo.last_audit_id()
        self._latest = await self._repo.latest_calls(since, up_to_id=last_id)
        self._last_id = last_id
        self._horizon = since
        self._pruned_size = len(self._latest)
        self._synced_at = now

    async def _follow(self, since: float, now: float) -> None:
        while True:
            rows = await self._repo.audit_after(self._last_id, _BATCH)
            for row_id, callee_hash, at in rows:
                self._last_id = row_id
                if callee_hash is not None and at > self._latest.get(callee_hash, float("-inf")):
                    self._latest[callee_hash] = at
            if len(rows) < _BATCH:
                break
        self._synced_at = now
        if len(self._latest) > 2 * self._pruned_size + 1000:
            # Forget numbers whose latest call has left every window we could be asked about.
            self._latest = {h: at for h, at in self._latest.items() if at >= since}
            self._horizon = max(self._horizon or since, since)
            self._pruned_size = len(self._latest)

    async def close(self) -> None:
        """Let a refresh in flight finish (it reads the store, which closes after us)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task

    def __len__(self) -> int:
        return len(self._latest)
