"""SQL for call outcomes and answer rates, on the call_audit table (migration 0002).

May: update the outcome columns of the call_audit row a decision wrote (it owns those columns,
see agent/store/__init__.py), read outcomes back for answer rates, clear them past their
retention (asked by the compliance sweep). Must not: create audit rows
(the outbound repo owns them) or hold state.
A channel that ran the outbound AGI twice has two rows; the last decision is the one dialled.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.outcomes.calls import (
    DIAL_OUTCOMES,
    OUTCOME_CANCELLED,
    OUTCOME_UNKNOWN,
    CallEnded,
    CdrSeen,
)
from agent.store import Database

# Outcomes that say how the callee's side went: the denominator of an answer rate.
# not_dialled (hung up before Dial), cancelled (our side hung up while it rang) and unknown
# (AMI was down) say nothing about the number.
DIALLED_OUTCOMES = (*(o for o in DIAL_OUTCOMES.values() if o != OUTCOME_CANCELLED), "failed")

# The columns of call_audit this repo owns (agent/store/__init__.py).
OUTCOME_COLUMNS = (
    "outcome", "dial_status", "hangup_cause", "cdr_disposition", "talk_seconds", "linkedid",
    "ended_at",
)  # fmt: skip
_ANY_OUTCOME = " OR ".join(f"{c} IS NOT NULL" for c in OUTCOME_COLUMNS)

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

    async def record_end(self, ended: CallEnded) -> tuple[str, str | None, float] | None:
        """Store how a call ended. Returns the row's (pool, number used, decision time), or
        None when no row matched.

        Our own measure of talk time only stands until a Cdr is stored: then the CDRs' billable
        seconds are the talk time, whichever arrives first."""
        row = await self._db.fetchone(
            "UPDATE call_audit SET outcome = ?, dial_status = ?, hangup_cause = ?, linkedid = ?,"
            " ended_at = ?,"
            " talk_seconds = CASE WHEN cdr_disposition IS NULL THEN ? ELSE talk_seconds END"
            f" WHERE {_LATEST} RETURNING COALESCE(pool, ''), number, at",
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
        return None if row is None else (str(row[0]), row[1], float(row[2]))

    async def record_cdr(self, cdr: CdrSeen) -> tuple[str, str | None, bool] | None:
        """Add one Cdr's billable seconds to the talk time (a call has one Cdr per bridge
        segment, e.g. after a transfer); the first Cdr replaces our own measure. A Cdr that
        settles a call ended in an AMI gap replaces its unknown outcome, once: the third value
        says whether this Cdr did (a row whose outcome is already known is left as it is).
        Returns (pool, outcome, settled) of the row, or None when no row matched."""
        row = await self._db.fetchone(
            "UPDATE call_audit SET"
            " talk_seconds = CASE WHEN cdr_disposition IS NULL THEN ?"
            " ELSE COALESCE(talk_seconds, 0) + ? END,"
            " cdr_disposition = ?"
            f" WHERE {_LATEST} RETURNING COALESCE(pool, ''), outcome",
            (cdr.billable_seconds, cdr.billable_seconds, cdr.disposition, cdr.uniqueid),
        )
        if row is None:
            return None
        pool, outcome = str(row[0]), row[1]
        if cdr.settles is None or outcome != OUTCOME_UNKNOWN:
            return pool, outcome, False
        settled = await self._db.fetchone(
            f"UPDATE call_audit SET outcome = ? WHERE {_LATEST} AND outcome = ? RETURNING outcome",
            (cdr.settles, cdr.uniqueid, OUTCOME_UNKNOWN),
        )  # conditional: of two agents' links seeing this Cdr, one settles it
        return (pool, cdr.settles, True) if settled is not None else (pool, outcome, False)

    async def awaiting_outcome(self, since: float, before: float) -> list[tuple[str, str]]:
        """(uniqueid, linkedid) of recent rows with no outcome yet: calls placed while AMI
        was down or still in progress when we lost the link."""
        rows = await self._db.fetchall(
            "SELECT uniqueid, COALESCE(linkedid, '') FROM call_audit WHERE at >= ? AND at <= ?"
            " AND outcome IS NULL AND uniqueid IS NOT NULL AND uniqueid != ''",
            (since, before),
        )
        return [(str(r[0]), str(r[1])) for r in rows]

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

    # -- retention (the compliance sweep asks; only this owner clears the columns) ---------
    async def count_outcomes_before(self, cutoff: float) -> int:
        """Rows decided before ``cutoff`` that still carry an outcome."""
        row = await self._db.fetchone(
            f"SELECT COUNT(*) FROM call_audit WHERE at < ? AND ({_ANY_OUTCOME})", (cutoff,)
        )
        return int(row[0]) if row else 0

    async def clear_outcomes_before(self, cutoff: float) -> int:
        """Clear the outcome columns of rows decided before ``cutoff`` (the row stays: its
        decision has its own retention): how many rows were cleared."""
        sets = ", ".join(f"{c} = NULL" for c in OUTCOME_COLUMNS)
        return await self._db.execute(
            f"UPDATE call_audit SET {sets} WHERE at < ? AND ({_ANY_OUTCOME})", (cutoff,)
        )
