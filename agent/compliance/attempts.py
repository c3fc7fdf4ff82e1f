"""Attempts per callee and purpose, counted from the store's call_audit without a query per call.

An index in memory of the call_audit rows of the limited purposes within the longest period:
loaded once, then tailed (rows with a higher id, every refresh), so calls another agent on the
same store made are counted within one refresh interval. Calls this process let out are counted
at once ("pending") until their own audit row is tailed. A call counts when its decision let it
out (status ok, exhausted or fallback). No SQL here (repo.py), no policy (policy.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from agent.compliance.repo import ComplianceRepo

Key = tuple[str, str]  # (callee hash, purpose)
_SWEEP_EVERY = 300  # tails between sweeps of entries older than the longest period


class AttemptIndex:
    def __init__(self) -> None:
        self._times: dict[Key, list[float]] = {}  # sorted call times from the store
        self._pending: dict[Key, list[float]] = {}  # calls let out here, rows not tailed yet
        self._last_id = -1  # -1: not loaded
        self._purposes: frozenset[str] = frozenset()
        self._period = 0.0
        self._tails = 0

    def configure(self, purposes: Iterable[str], period: float) -> bool:
        """The limited purposes and the longest period; True when a reload is needed."""
        purposes = frozenset(purposes)
        changed = purposes != self._purposes or period > self._period
        self._purposes, self._period = purposes, period
        if changed:
            self._last_id = -1
        return changed

    async def refresh(self, repo: ComplianceRepo, now: float) -> None:
        if not self._purposes:
            self._times.clear()
            self._last_id = 0
            return
        since = now - self._period
        if self._last_id < 0:
            self._times.clear()
            self._last_id = 0
        rows, self._last_id = await repo.attempt_rows(self._last_id, since, sorted(self._purposes))
        for callee_hash, purpose, at in rows:
            key = (callee_hash, purpose)
            bisect.insort(self._times.setdefault(key, []), at)
            pending = self._pending.get(key)
            if pending:
                # Our own call's row has arrived: it no longer needs counting as pending.
                i = bisect.bisect_right(pending, at)
                if i:
                    del pending[0]
                if not pending:
                    del self._pending[key]
        self._tails += 1
        if self._tails % _SWEEP_EVERY == 0:
            self._sweep(since)

    def _sweep(self, since: float) -> None:
        for store in (self._times, self._pending):
            for key in list(store):
                times = store[key]
                del times[: bisect.bisect_left(times, since)]
                if not times:
                    del store[key]

    def note(self, key: Key, at: float) -> None:
        bisect.insort(self._pending.setdefault(key, []), at)

    def count(self, keys: Iterable[Key], since: float) -> int:
        total = 0
        stored, pending = self._times, self._pending
        for key in keys:
            times = stored.get(key)
            if times:
                total += len(times) - bisect.bisect_left(times, since)
            times = pending.get(key)
            if times:
                total += len(times) - bisect.bisect_left(times, since)
        return total
