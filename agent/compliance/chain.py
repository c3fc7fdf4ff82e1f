"""The tamper-evident audit trail: a SHA-256 hash chain over call, admin and recording audit rows.

Off the call path: ``AuditChain.extend`` appends one chain entry per new row, table by table in
id order, each entry carrying the hash of the entry before it; the agent runs it every few
seconds. ``verify`` recomputes everything and names each row edited, deleted (and not covered
by a recorded retention purge) or inserted between chained rows, and each daily anchor that no
longer matches. A daily anchor (the chain's head hash at the first chain run of each UTC day,
sealing everything chained before) is stored and logged, so a copy of the log outside the
database proves the chain was not rebuilt wholesale.

A call_audit row is chained once it is ``settle_seconds`` old (audit rows land behind the
answers, in batches); a recording_audit row once its outcome is no longer ``started`` (or an
hour passed). This module hashes and compares; SQL lives in repo.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.compliance.repo import CHAINED, ChainEntry, ComplianceRepo

log = logging.getLogger(__name__)

GENESIS = "0" * 64
PURGE = "purge"
_BATCH = 1000  # rows per append (hashed on a worker thread, not on the event loop)
_STARTED_GRACE = 3600.0  # a recording access still "started" after this is chained as it is


# json.dumps(value, separators=(",", ":"), ensure_ascii=False), without building an encoder
# for every row: the same text, byte for byte.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def row_hash(tbl: str, values: Sequence[Any]) -> str:
    text = _JSON.encode([tbl, *values])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_hash(e: ChainEntry) -> str:
    text = f"{e.prev_hash}|{e.tbl}|{e.row_id}|{e.row_at!r}|{e.row_hash}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link(seq: int, prev: str, rows: Sequence[tuple[str, Sequence[Any]]]) -> list[ChainEntry]:
    """The chain entries of ``rows`` ((table, chained columns), in chain order), following the
    entry numbered ``seq`` whose hash is ``prev``. Pure: runs on a worker thread."""
    entries: list[ChainEntry] = []
    for tbl, values in rows:
        seq += 1
        entry = ChainEntry(
            seq, tbl, int(values[0]), float(values[1]), row_hash(tbl, values), prev, None
        )
        entries.append(entry)
        prev = entry_hash(entry)
    return entries


@dataclass(slots=True)
class VerifyReport:
    entries: int = 0
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    unchained: dict[str, int] = field(default_factory=dict)  # rows newer than the chain

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditChain:
    def __init__(self, repo: ComplianceRepo, *, settle_seconds: float = 5.0) -> None:
        self._repo = repo
        self._settle = settle_seconds
        self._anchored = ""  # the last UTC day seen anchored

    def _settled(self, tbl: str, values: Sequence[Any], now: float) -> bool:
        at = float(values[1])
        if tbl == "recording_audit" and values[6] == "started":
            return at < now - _STARTED_GRACE
        return tbl != "call_audit" or at <= now - self._settle

    async def extend(self, now: float) -> int:
        """Chain the rows added since the last run; returns how many entries were added."""
        added = 0
        while True:
            head = await self._repo.chain_head()
            rows: list[tuple[str, Sequence[Any]]] = []
            for tbl in CHAINED:
                after = await self._repo.chained_up_to(tbl)
                for values in await self._repo.rows_after(tbl, after, _BATCH - len(rows)):
                    if not self._settled(tbl, values, now):
                        break
                    rows.append((tbl, values))
            if not rows:
                return added
            seq = head.seq if head else 0
            prev = entry_hash(head) if head else GENESIS
            # Hashing a batch is a few ms of CPU: on a worker thread, so calls keep being answered.
            entries = await asyncio.to_thread(link, seq, prev, rows)
            if not await self._repo.append_chain(seq, entries):
                return added  # another agent chained meanwhile: its entries stand
            added += len(entries)
            if len(entries) < _BATCH:
                return added

    async def record_purge(self, table: str, cutoff: float, deleted: int, now: float) -> None:
        """A retention purge as a chain entry, so verify knows those rows left on purpose."""
        detail = json.dumps({"table": table, "before": cutoff, "deleted": deleted, "at": now})
        for _ in range(5):
            head = await self._repo.chain_head()
            entry = ChainEntry(
                (head.seq if head else 0) + 1,
                PURGE,
                (head.seq if head else 0) + 1,
                cutoff,
                row_hash(PURGE, [detail]),
                entry_hash(head) if head else GENESIS,
                detail,
            )
            if await self._repo.append_chain(head.seq if head else 0, [entry]):
                return
        raise RuntimeError("could not record a purge in the audit chain: the chain keeps moving")

    async def anchor(self, now: float) -> tuple[str, int, str] | None:
        """At the first run of a UTC day, store and log (day, seq, head hash); None when the
        chain is empty or today is anchored already."""
        day = datetime.fromtimestamp(now, UTC).date().isoformat()
        if day == self._anchored:
            return None
        head = await self._repo.chain_head()
        if head is None:
            return None
        digest = entry_hash(head)
        added = await self._repo.add_anchor(day, head.seq, digest, now)
        self._anchored = day  # stored by this process or by another agent on this store
        if not added:
            return None
        log.info("audit: daily anchor %s seq %d head %s", day, head.seq, digest)
        return day, head.seq, digest

    async def verify(self) -> VerifyReport:
        report = VerifyReport()
        expected: dict[tuple[str, int], ChainEntry] = {}
        purges: list[tuple[int, str, float]] = []  # (seq, table, cutoff)
        hashes: dict[int, str] = {}
        # prev: each entry's hash as stored (names the broken link); whole: the chain's hash
        # recomputed from the start (what a daily anchor witnessed).
        prev, whole, after = GENESIS, GENESIS, 0
        while batch := await self._repo.chain_entries(after, 5000):
            for e in batch:
                report.entries += 1
                if e.prev_hash != prev:
                    report.problems.append(
                        f"chain entry {e.seq}: does not follow the entry before it"
                        " (the chain was edited)"
                    )
                if e.tbl == PURGE:
                    if row_hash(PURGE, [e.detail]) != e.row_hash:
                        report.problems.append(f"chain entry {e.seq}: purge record edited")
                    info = json.loads(e.detail or "{}")
                    purges.append((e.seq, str(info.get("table")), float(info.get("before", 0))))
                else:
                    expected[(e.tbl, e.row_id)] = e
                prev = entry_hash(e)
                whole = entry_hash(e._replace(prev_hash=whole))
                hashes[e.seq] = whole
            after = batch[-1].seq
        for day, seq, head in await self._repo.anchors():
            if hashes.get(seq) != head:
                report.problems.append(
                    f"anchor {day} (entry {seq}): the chain no longer matches its daily anchor"
                )
        for tbl in CHAINED:
            await self._verify_table(tbl, expected, purges, report)
        return report

    async def _verify_table(
        self,
        tbl: str,
        expected: dict[tuple[str, int], ChainEntry],
        purges: list[tuple[int, str, float]],
        report: VerifyReport,
    ) -> None:
        top = max((rid for (t, rid) in expected if t == tbl), default=0)
        seen: set[int] = set()
        after = 0
        while rows := await self._repo.rows_after(tbl, after, 5000):
            for values in rows:
                rid = int(values[0])
                after = rid
                entry = expected.get((tbl, rid))
                if entry is None:
                    if rid < top:
                        report.problems.append(f"inserted: {tbl} row {rid} (not in the chain)")
                    else:
                        report.unchained[tbl] = report.unchained.get(tbl, 0) + 1
                    continue
                seen.add(rid)
                report.rows += 1
                if row_hash(tbl, values) != entry.row_hash:
                    report.problems.append(f"edited: {tbl} row {rid}")
        for (t, rid), entry in expected.items():
            if t != tbl or rid in seen:
                continue
            purged = any(
                p_tbl == tbl and p_seq > entry.seq and entry.row_at < cutoff
                for p_seq, p_tbl, cutoff in purges
            )
            if not purged:
                report.problems.append(f"deleted: {tbl} row {rid}")
