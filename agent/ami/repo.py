"""SQL for call outcomes and answer rates, on the call_audit table (migration 0002).

May: update the outcome columns of the call_audit row a decision wrote, read outcomes back for
answer rates. Must not: create audit rows (the outbound service owns them) or hold state.
A channel that ran the outbound AGI twice has two rows; the last decision is the one dialled.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.ami.calls import DIAL_OUTCOMES, OUTCOME_UNKNOWN, CallEnded, CdrSeen
from agent.store.db import Database

# Outcomes that say how the callee's side went: the denominator of an answer rate.
# not_dialled (hung up before Dial) and unknown (AMI was down) say nothing about the number.
DIALLED_OUTCOMES = (*DIAL_OUTCOMES.values(), "failed")

_LATEST = "id = (SELECT max(id) FROM call_audit WHERE uniqueid = ?)"


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    at: float
    pool: str | None
    number: str | None
    outcome: str
    talk_seconds: int


class OutcomeRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_end(self, ended: CallEnded) -> str | None:
        """Store how a call ended. Returns the row's pool, or None when no row matched."""
        row = await self._db.fetchone(
            "UPDATE call_audit SET outcome = ?, dial_status = ?, hangup_cause = ?, linkedid = ?,"
            " ended_at = ?, talk_seconds = COALESCE(talk_seconds, ?)"
            f" WHERE {_LATEST} RETURNING COALESCE(pool, '')",
            (
                ended.outcome,
                ended.dial_status,
                ended.hangup_cause,
                ended.linkedid,
                ended.ended_at,
                ended.talk_seconds,
                ended.uniqueid,
            ),
        )
        return None if row is None else str(row[0])

    async def record_cdr(self, cdr: CdrSeen) -> bool:
        """The CDR's billable seconds are the talk time (they win over our own measure)."""
        row = await self._db.fetchone(
            "UPDATE call_audit SET cdr_disposition = ?, talk_seconds = ?"
            f" WHERE {_LATEST} RETURNING id",
            (cdr.disposition, cdr.billable_seconds, cdr.uniqueid),
        )
        return row is not None

    async def awaiting_outcome(self, since: float, before: float) -> list[tuple[str, str]]:
        """(uniqueid, linkedid) of recent rows with no outcome yet: calls placed while AMI
        was down or still in progress when we lost the link."""
        rows = await self._db.fetchall(
            "SELECT uniqueid, COALESCE(linkedid, '') FROM call_audit WHERE at >= ? AND at <= ?"
            " AND outcome IS NULL AND uniqueid IS NOT NULL AND uniqueid != ''",
            (since, before),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def mark_unknown(self, uniqueids: list[str], ended_at: float) -> None:
        await self._db.executemany(
            f"UPDATE call_audit SET outcome = ?, ended_at = ? WHERE {_LATEST} AND outcome IS NULL",
            [(OUTCOME_UNKNOWN, ended_at, u) for u in uniqueids],
        )

    async def outcomes(
        self, since: float, until: float, pool: str | None = None
    ) -> list[OutcomeRow]:
        sql = (
            "SELECT at, pool, number, outcome, COALESCE(talk_seconds, 0) FROM call_audit"
            " WHERE at >= ? AND at < ? AND outcome IS NOT NULL"
        )
        params: list[object] = [since, until]
        if pool is not None:
            sql += " AND pool = ?"
            params.append(pool)
        rows = await self._db.fetchall(sql + " ORDER BY at", params)
        return [OutcomeRow(float(r[0]), r[1], r[2], str(r[3]), int(r[4])) for r in rows]
