"""The SQL of screening: lists, their version, decisions, and the callback look-up.

Talks to the store only through ``agent.store.Database``; no policy, no plain caller numbers
written (decisions carry a keyed hash and a masked form). Writes only screening's own tables;
the callback look-up reads who we called through agent.outbound.reads (call_audit is the
outbound feature's table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.outbound.reads import CallHistory
from agent.store import Database

LIST_KINDS = ("allow", "block")
# 9 parameters a row: stays far below SQLite's bound-parameter limit (32766).
_ROWS_PER_INSERT = 200


@dataclass(frozen=True, slots=True)
class ListEntry:
    kind: str
    entry: str
    added_at: float
    note: str


@dataclass(frozen=True, slots=True)
class DecisionRow:
    at: float
    uniqueid: str
    dialled: str
    caller_hash: str | None
    caller_masked: str
    attestation: str
    score: int
    verdict: str
    reasons: str


class ScreeningRepo:
    def __init__(self, db: Database) -> None:
        self._db = db
        # call_audit is the outbound feature's table: read through its named queries.
        self._calls = CallHistory(db)

    async def lists_version(self) -> int:
        row = await self._db.fetchone("SELECT lists_version FROM screening_state WHERE id = 1")
        return int(row[0]) if row else 0

    async def list_entries(self, kind: str | None = None) -> list[ListEntry]:
        if kind is None:
            rows = await self._db.fetchall(
                "SELECT kind, entry, added_at, note FROM screening_lists ORDER BY kind, entry"
            )
        else:
            rows = await self._db.fetchall(
                "SELECT kind, entry, added_at, note FROM screening_lists WHERE kind = ?"
                " ORDER BY entry",
                (kind,),
            )
        return [ListEntry(r[0], r[1], float(r[2]), r[3]) for r in rows]

    async def add_entry(self, kind: str, entry: str, at: float, note: str) -> bool:
        """Add (or re-note) an entry; True when it was not there before."""
        async with self._db.transaction() as tx:
            existed = await tx.fetchone(
                "SELECT 1 FROM screening_lists WHERE kind = ? AND entry = ?", (kind, entry)
            )
            await tx.execute(
                "INSERT INTO screening_lists (kind, entry, added_at, note) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, entry) DO UPDATE SET note = excluded.note",
                (kind, entry, at, note),
            )
            await tx.execute(
                "UPDATE screening_state SET lists_version = lists_version + 1 WHERE id = 1"
            )
        return existed is None

    async def remove_entry(self, kind: str, entry: str) -> bool:
        async with self._db.transaction() as tx:
            count = await tx.execute(
                "DELETE FROM screening_lists WHERE kind = ? AND entry = ?", (kind, entry)
            )
            if count:
                await tx.execute(
                    "UPDATE screening_state SET lists_version = lists_version + 1 WHERE id = 1"
                )
        return count > 0

    # -- the callback look-up: outbound's call_audit, through its named reads ---------------

    async def last_audit_id(self) -> int:
        return await self._calls.last_audit_id()

    async def latest_calls(self, since: float, *, up_to_id: int) -> dict[str, float]:
        return await self._calls.latest_calls(since, up_to_id=up_to_id)

    async def audit_after(
        self, last_id: int, limit: int, *, since: float | None = None
    ) -> list[tuple[int, str | None, float]]:
        return await self._calls.audit_after(last_id, limit, since=since)

    async def latest_call(self, callee_hash: str) -> float | None:
        return await self._calls.latest_call(callee_hash)

    async def record_decisions(self, rows: Sequence[DecisionRow]) -> None:
        """Store decisions; one multi-row INSERT per chunk (one statement is one transaction:
        a single store round trip instead of BEGIN, INSERT, COMMIT)."""
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            params: list[object] = []
            for r in chunk:
                params += (
                    r.at,
                    r.uniqueid,
                    r.dialled,
                    r.caller_hash,
                    r.caller_masked,
                    r.attestation,
                    r.score,
                    r.verdict,
                    r.reasons,
                )
            await self._db.execute(
                "INSERT INTO screening_decisions (at, uniqueid, dialled, caller_hash,"
                " caller_masked, attestation, score, verdict, reasons) VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                params,
            )

    # -- retention (the compliance sweep asks; only this owner deletes the rows) -----------
    async def count_decisions_before(self, cutoff: float) -> int:
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM screening_decisions WHERE at < ?", (cutoff,)
        )
        return int(row[0]) if row else 0

    async def purge_decisions_before(self, cutoff: float) -> int:
        """Delete screening decisions made before ``cutoff``: how many went."""
        return await self._db.execute("DELETE FROM screening_decisions WHERE at < ?", (cutoff,))
