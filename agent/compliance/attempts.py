"""Attempts per callee and purpose, counted from the store's call_audit without a query per call.

An index in memory of the call_audit rows of the limited purposes within the longest period:
loaded once, then tailed (rows with a higher id, every refresh), so calls another agent on the
same store made are counted within one refresh interval. Calls this process let out are counted
at once ("pending") until their own audit row is tailed. A call counts when its decision let it
out (status ok, exhausted or fallback). No SQL here (repo.py), no policy (policy.py).

It shares the event loop with the calls: rows are read and indexed a page at a time, and the
sweep of old entries goes a slice of keys at a time, each a few milliseconds at most (a tail
of 2 s of calls indexed in one go held the loop for 10-15 ms). Call times are kept in tuples
of floats, which the cycle collector stops tracking at its first pass: a list per callee (an
array too) gave every full collection one more object to walk per callee called within the
period. A callee has a few calls in a period, so a new tuple per call costs nothing.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Iterable

from agent.compliance.repo import ComplianceRepo

Key = tuple[str, str]  # (callee hash, purpose)
Times = tuple[float, ...]  # sorted
_SWEEP_EVERY = 300  # tails between sweeps of entries older than the longest period
PAGE = 250  # call_audit rows read and indexed between two turns of the event loop
_SWEEP_KEYS = 5000  # keys swept between two turns of the event loop


class AttemptIndex:
    def __init__(self) -> None:
        self._times: dict[Key, Times] = {}  # call times from the store
        self._pending: dict[Key, Times] = {}  # calls let out here, rows not tailed yet
        self._last_id = -1  # -1: not loaded
        self._purposes: frozenset[str] = frozenset()
        self._period = 0.0
        self._tails = 0
        self._generation = 0  # moves when a reload is needed: a tail under way stops
        self._lock = asyncio.Lock()  # one tail at a time: a row is indexed once

    def configure(self, purposes: Iterable[str], period: float) -> bool:
        """The limited purposes and the longest period; True when a reload is needed."""
        purposes = frozenset(purposes)
        changed = purposes != self._purposes or period > self._period
        self._purposes, self._period = purposes, period
        if changed:
            self._last_id = -1
            self._generation += 1
        return changed

    async def refresh(self, repo: ComplianceRepo, now: float) -> None:
        async with self._lock:
            if not self._purposes:
                self._times.clear()
                self._last_id = 0
                return
            since = now - self._period
            if self._last_id < 0:
                self._times.clear()
                self._last_id = 0
            if not await self._tail(repo, since):
                return  # reconfigured meanwhile: the next refresh loads again
            self._tails += 1
            if self._tails % _SWEEP_EVERY == 0:
                await self._sweep(since)

    async def _tail(self, repo: ComplianceRepo, since: float) -> bool:
        """Index the rows after the last one read, a page at a time; False when the index
        was reconfigured meanwhile."""
        generation, purposes = self._generation, sorted(self._purposes)
        after: int | None = self._last_id
        if not after:  # nothing read yet: start from the first row in the period, by time
            after = await repo.attempt_start(since)
            if after is None or generation != self._generation:
                return generation == self._generation
        while True:
            rows, top, read = await repo.attempt_rows(after, since, purposes, PAGE)
            if generation != self._generation:
                return False
            self._index(rows)
            after = self._last_id = top
            if read < PAGE:
                return True

    def _index(self, rows: Iterable[tuple[str, str, float]]) -> None:
        stored, pending = self._times, self._pending
        for callee_hash, purpose, at in rows:
            key = (callee_hash, purpose)
            stored[key] = _insert(stored.get(key), at)
            mine = pending.get(key)
            if mine:
                # Our own call's row has arrived: it no longer needs counting as pending.
                if bisect.bisect_right(mine, at):
                    mine = mine[1:]
                if mine:
                    pending[key] = mine
                else:
                    del pending[key]

    async def _sweep(self, since: float) -> None:
        for store in (self._times, self._pending):
            keys = list(store)
            for start in range(0, len(keys), _SWEEP_KEYS):
                for key in keys[start : start + _SWEEP_KEYS]:
                    times = store.get(key)
                    if times is None:
                        continue
                    times = times[bisect.bisect_left(times, since) :]
                    if times:
                        store[key] = times
                    else:
                        del store[key]
                await asyncio.sleep(0)

    def note(self, key: Key, at: float) -> None:
        self._pending[key] = _insert(self._pending.get(key), at)

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


def _insert(times: Times | None, at: float) -> Times:
    if not times:
        return (at,)
    if at >= times[-1]:  # the usual case: rows and calls come in time order
        return (*times, at)
    i = bisect.bisect_right(times, at)
    return (*times[:i], at, *times[i:])
