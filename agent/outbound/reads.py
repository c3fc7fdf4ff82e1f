"""The named reads other features make of the outbound feature's tables (see the owners table
in agent/store/__init__.py).

May: read call_audit's decision columns (who we called, when), spam_reports, rests,
quarantines and numbers. Must not: write anything (agent/outbound/repo.py owns these tables)
or read another feature's tables. A feature that needs more of outbound's data adds a named
read here rather than SQL of its own, so a change to these tables has one place to look.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store import Database


class CallHistory:
    """Who we called and when, by keyed callee hash (screening's callback check). The
    decision columns read here are written once, when the row is inserted."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def last_audit_id(self) -> int:
        row = await self._db.fetchone("SELECT MAX(id) FROM call_audit")
        return int(row[0]) if row and row[0] is not None else 0

    async def latest_calls(self, since: float, *, up_to_id: int) -> dict[str, float]:
        """Each (hashed) number we called since ``since``, with the time of the latest call."""
        rows = await self._db.fetchall(
            "SELECT callee_hash, MAX(at) FROM call_audit WHERE at >= ? AND id <= ?"
            " AND callee_hash IS NOT NULL GROUP BY callee_hash",
            (since, up_to_id),
        )
        return {r[0]: float(r[1]) for r in rows}

    async def audit_after(
        self, last_id: int, limit: int, *, since: float | None = None
    ) -> list[tuple[int, str | None, float]]:
        """Outbound calls recorded after row ``last_id`` (and at or after ``since``): (id,
        callee hash or None, time)."""
        rows = await self._db.fetchall(
            "SELECT id, callee_hash, at FROM call_audit WHERE id > ? AND at >= ?"
            " ORDER BY id LIMIT ?",
            (last_id, float("-inf") if since is None else since, limit),
        )
        return [(int(r[0]), r[1], float(r[2])) for r in rows]

    async def latest_call(self, callee_hash: str) -> float | None:
        """When we last called this (hashed) number, if ever (index call_audit_callee)."""
        row = await self._db.fetchone(
            "SELECT MAX(at) FROM call_audit WHERE callee_hash = ?", (callee_hash,)
        )
        return float(row[0]) if row and row[0] is not None else None


@dataclass(frozen=True, slots=True)
class Activity:
    """What happened to our numbers in a period (the weekly report)."""

    spam_reports: int  # reports of our numbers
    rested: int  # numbers that started a rest
    quarantined: int
    promoted: int  # reserve numbers promoted into a pool


async def activity_between(db: Database, since: float, until: float) -> Activity:
    """Counts over [since, until) (UTC epoch seconds)."""
    counts = []
    for sql in (
        "SELECT COUNT(*) FROM spam_reports WHERE ours = 1 AND reported_at >= ? AND reported_at < ?",
        "SELECT COUNT(DISTINCT number) FROM rests WHERE starts_at >= ? AND starts_at < ?",
        "SELECT COUNT(*) FROM quarantines WHERE since >= ? AND since < ?",
        "SELECT COUNT(*) FROM numbers WHERE promoted_at >= ? AND promoted_at < ?",
    ):
        row = await db.fetchone(sql, (since, until))
        counts.append(int(row[0]) if row is not None and row[0] is not None else 0)
    return Activity(*counts)
