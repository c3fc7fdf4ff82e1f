"""Attempts per callee and purpose, counted exactly in a fixed amount of memory.

The copy in memory is a table of ``SLOTS`` slots (8 MiB) whatever the call volume, like the
screening's callback table: a (callee hash, purpose) key picks a slot, and the slot keeps the
latest time of any counted call whose key picks it. A slot older than the period proves that
the callee had no call for that purpose in it: most calls are counted from memory alone (a
clinic's callees are mostly called once in a period). A slot inside the period only says
"maybe"; the store then counts exactly, with one look-up on ``call_audit (callee_hash, at)``.
A copy of every key (the earlier design) grew ~400 bytes per callee called in the period:
270 MB for a 7-day limit at 100,000 calls a day.

The table is filled from call_audit rows of the limited purposes within the longest period:
loaded once, then tailed (rows with a higher id, every refresh), so calls another agent on the
same store made are counted within one refresh interval. On PostgreSQL an id is taken at
INSERT and seen at COMMIT, so a lower id may appear after a higher one was read: ids missing
below the last one read are looked for again at each refresh for a minute. Calls this process
let out are counted at once ("pending") until their own audit row (same Asterisk uniqueid)
is read; the store's count covers the rows read only (ids up to the last one read, less the
missing ones), so no call is counted twice or missed. A call counts when its decision let it
out (status ok, exhausted or fallback). No SQL here (repo.py), no policy (policy.py). Holds
times only, never a number or hash, except the pending calls' keys.

It shares the event loop with the calls: rows are read and folded a page at a time.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import mmap
import zlib
from collections import OrderedDict
from collections.abc import Iterable

from agent.compliance.repo import AttemptRow, ComplianceRepo
from agent.errors import StoreError

Key = tuple[str, str]  # (callee hash, purpose)
Pending = tuple[tuple[float, str], ...]  # (time, Asterisk uniqueid) per call, in time order
SLOTS = 2**21  # 4 bytes each: 8 MiB, flat from the first call to the millionth
KEPT = 16384  # keys whose call times are kept (~6 MB): patients called again lately
PAGE = 250  # call_audit rows read and folded between two turns of the event loop
_GAP_SECONDS = 60.0  # a missing id is looked for this long (statements time out after 10 s)
_GAPS = 500  # missing ids looked for at most (bound parameters of one statement)
_SWEEP_EVERY = 300  # tails between sweeps of pending calls older than the longest period


class AttemptIndex:
    def __init__(self, repo: ComplianceRepo, slots: int = SLOTS) -> None:
        self._repo = repo
        self._size = slots
        self._slots = _table(slots)
        self._ready = False  # the table covers the period as configured: memory may answer
        self._loaded = False  # the store was read once: it may count what memory cannot
        # Rows up to this id were read, but the gaps: the store counts those.
        self._last_id = 0
        self._pending: dict[Key, Pending] = {}  # calls let out here, rows not read yet
        self._gaps: dict[int, float] = {}  # ids missing below the last one read: when seen
        # The calls read of keys the store counted lately (those called again): their times,
        # kept up to date by the tail, so the next call to them needs no look-up.
        self._kept: OrderedDict[Key, tuple[float, ...]] = OrderedDict()
        self._folds = 0  # pages folded: a look-up that saw none fold meanwhile may be kept
        # (hashes, purpose) the store is counting now: another call for them waits its turn.
        self.counting: dict[tuple[tuple[str, ...], str], asyncio.Future[None]] = {}
        self._purposes: frozenset[str] = frozenset()
        self._period = 0.0
        self._tails = 0
        self._generation = 0  # moves when a reload is needed: a reload under way stops
        self._lock = asyncio.Lock()  # one tail at a time: a row is folded once

    def configure(self, purposes: Iterable[str], period: float) -> bool:
        """The limited purposes and the longest period; True when a reload is needed."""
        purposes = frozenset(purposes)
        changed = purposes != self._purposes or period > self._period
        self._purposes, self._period = purposes, period
        if changed:
            self._ready = False
            self._generation += 1
        return changed

    async def refresh(self, now: float) -> None:
        async with self._lock:
            since = now - self._period
            if not self._ready:
                if not await self._reload(since, now):
                    return  # reconfigured meanwhile: the next refresh loads again
            elif self._purposes:
                await self._fill_gaps(since, now)
                await self._tail(self._slots, self._last_id, since, now, self._generation)
            self._tails += 1
            if self._tails % _SWEEP_EVERY == 0:
                self._sweep(since)

    async def _reload(self, since: float, now: float) -> bool:
        """A new table of the whole period, swapped in once complete; meanwhile the store
        counts every call (the old table may not cover the new period)."""
        generation = self._generation
        table = _table(self._size)
        self._kept.clear()  # kept for the old period; none kept until the reload is done
        if self._purposes:
            start = await self._repo.attempt_start(since)
            if generation != self._generation or not await self._tail(
                table, start, since, now, generation
            ):
                return False
        self._slots, self._ready, self._loaded = table, True, True
        return True

    async def _tail(
        self, table: memoryview, after: int, since: float, now: float, generation: int
    ) -> bool:
        """Fold the rows after ``after`` into ``table``, a page at a time; False when the
        index was reconfigured meanwhile."""
        purposes = sorted(self._purposes)
        while True:
            page = await self._repo.attempt_rows(after, since, purposes, PAGE)
            if generation != self._generation:
                return False
            self._fold(table, page.rows)
            for row_id in page.missing[: _GAPS - len(self._gaps)]:  # not committed yet, or
                self._gaps.setdefault(row_id, now)  # never (a rollback): looked for again
            after = page.top
            self._last_id = max(self._last_id, page.top)
            if page.read < PAGE:
                return True

    async def _fill_gaps(self, since: float, now: float) -> None:
        """Fold the rows that were missing below the last id read and have appeared since (on
        PostgreSQL an id is taken at INSERT, visible at COMMIT: a lower one may come later);
        stop looking for one after ``_GAP_SECONDS`` (a rollback, a purge)."""
        if not self._gaps:
            return
        rows, found = await self._repo.attempt_rows_in(
            sorted(self._gaps), since, sorted(self._purposes)
        )
        self._fold(self._slots, rows)
        for row_id, missed in list(self._gaps.items()):
            if row_id in found or now - missed > _GAP_SECONDS:
                del self._gaps[row_id]

    def _fold(self, table: memoryview, rows: Iterable[AttemptRow]) -> None:
        """Into ``table``; each of this agent's calls among them stops counting as pending (a
        row read again, on a reload, finds its call gone already: matched by uniqueid)."""
        pending, kept_times = self._pending, self._kept
        self._folds += 1
        for _, callee_hash, purpose, at, uniqueid in rows:
            slot = _slot(callee_hash, purpose, self._size)
            stamp = min(math.ceil(at), 0xFFFFFFFF)
            if stamp > table[slot]:
                table[slot] = stamp
            key = (callee_hash, purpose)
            times = kept_times.get(key)
            if times is not None:
                kept_times[key] = tuple(sorted((*times, at)))
            if key in pending:
                self.forget(key, uniqueid)  # our own call, read back: no longer pending

    def _sweep(self, since: float) -> None:
        """Drop pending calls older than the period (rows that never reached the store), and
        kept times older than it."""
        for key, times in list(self._kept.items()):
            self._kept[key] = times[bisect.bisect_left(times, since) :]
        pending = self._pending
        for key, calls in list(pending.items()):
            kept = tuple(c for c in calls if c[0] >= since)
            if kept:
                pending[key] = kept
            else:
                del pending[key]

    def note(self, key: Key, at: float, uniqueid: str = "") -> None:
        """A call let out here (its audit row, written behind, carries the same uniqueid)."""
        calls = self._pending.get(key)
        self._pending[key] = tuple(sorted((*calls, (at, uniqueid)))) if calls else ((at, uniqueid),)

    def forget(self, key: Key, uniqueid: str) -> None:
        """A call noted here did not go out after all."""
        calls = self._pending.get(key)
        if calls:
            kept = _without(calls, uniqueid)
            if kept:
                self._pending[key] = kept
            else:
                del self._pending[key]

    def known(self, hashes: tuple[str, ...], purpose: str, since: float) -> int | None:
        """The count from memory alone: None when the store must count (a recent slot)."""
        if not self._ready:
            return None
        slots, size, kept = self._slots, self._size, self._kept
        total = 0
        for h in hashes:
            if slots[_slot(h, purpose, size)] >= since:
                times = kept.get((h, purpose))
                if times is None:
                    return None
                kept.move_to_end((h, purpose))
                total += len(times) - bisect.bisect_left(times, since)
        return total + self._pending_count(hashes, purpose, since)

    async def count(self, hashes: tuple[str, ...], purpose: str, since: float) -> int:
        """Calls let out to these hashes for ``purpose`` since ``since``. Raises StoreError
        when the store must count and cannot (or was never read)."""
        # Read pending and the last id read together, before waiting: a row read meanwhile
        # is then counted once (by its pending entry), not twice or never.
        known = self.known(hashes, purpose, since)
        if known is not None:
            return known
        if not self._loaded:
            # Never read (a command, or the store down since start): the store counts every
            # row, exact unless calls let out here may be among them, which it cannot tell.
            if self._pending:
                raise StoreError("earlier calls not read from the store yet")
            return await self._repo.attempt_count(hashes, purpose, since, None)
        up_to, mine = self._last_id, self._pending_count(hashes, purpose, since)
        gaps = tuple(self._gaps)  # not read yet: our own among them still count as pending
        if not self._ready:  # reloading: counted, not kept
            return mine + await self._repo.attempt_count(hashes, purpose, since, up_to, gaps)
        folds = self._folds
        found = await self._repo.attempt_times(hashes, purpose, since, up_to, gaps)
        if folds == self._folds and self._ready:  # nothing read meanwhile: keep them
            for h in hashes:
                self._kept[(h, purpose)] = tuple(sorted(at for fh, at in found if fh == h))
                self._kept.move_to_end((h, purpose))
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return mine + len(found)

    def _pending_count(self, hashes: tuple[str, ...], purpose: str, since: float) -> int:
        total = 0
        pending = self._pending
        for h in hashes:
            calls = pending.get((h, purpose))
            if calls:
                total += sum(1 for c in calls if c[0] >= since)
        return total


class Take:
    """One call's attempt under a limit: counted, and taken (noted at once) when below it, so
    that two calls to one callee at once cannot both take the last attempt. From memory, the
    count and the note are one step; when the store counts, calls for the same callee and
    purpose are counted one after the other, each seeing the attempt the one before took."""

    __slots__ = ("_call", "_hashes", "_index", "_limit", "_purpose", "_since")

    def __init__(
        self,
        index: AttemptIndex,
        hashes: tuple[str, ...],
        since: float,
        limit: int,
        call: tuple[Key, float, str],  # (key to note, time, uniqueid)
    ) -> None:
        self._index, self._hashes, self._since = index, hashes, since
        self._purpose, self._limit, self._call = call[0][1], limit, call

    def known(self) -> int | None:
        """The count from memory, the attempt taken if below the limit; None: not known."""
        counted = self._index.known(self._hashes, self._purpose, self._since)
        return None if counted is None else self._took(counted)

    async def counted(self) -> int:
        """The count, the attempt taken if below the limit. Raises StoreError."""
        counted = self.known()
        if counted is not None:
            return counted
        index, key = self._index, (self._hashes, self._purpose)
        while (busy := index.counting.get(key)) is not None:
            await asyncio.shield(busy)
        index.counting[key] = done = asyncio.get_running_loop().create_future()
        try:
            counted = await index.count(self._hashes, self._purpose, self._since)
        finally:  # the next call waiting goes on once this one is counted (and noted)
            del index.counting[key]
            done.set_result(None)
        return self._took(counted)

    def _took(self, counted: int) -> int:
        if counted < self._limit:
            self._index.note(*self._call)
        return counted


def _table(slots: int) -> memoryview:
    return memoryview(mmap.mmap(-1, 4 * slots)).cast("I")


def _slot(callee_hash: str, purpose: str, slots: int) -> int:
    """The slot of a key (CRC-32 spreads distinct keys evenly; never raises)."""
    return zlib.crc32(purpose.encode(), zlib.crc32(callee_hash.encode())) % slots


def _without(calls: Pending, uniqueid: str) -> Pending:
    """``calls`` less the first one with this uniqueid (Asterisk's, unique to the call; every
    AGI request carries one), unchanged if none has it."""
    for i, call in enumerate(calls):
        if call[1] == uniqueid:
            return calls[:i] + calls[i + 1 :]
    return calls
