"""SQL of reputation lookups (table reputation_checks, migration 0021). Owns that table.

May: store each answer, read a number's latest answer and history. Must not: decide what a
flag means or call providers.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store import Database, Row


@dataclass(frozen=True, slots=True)
class Check:
    number: str
    checked_at: float
    source: str
    score: float | None
    label: str | None
    flagged: bool


class ReputationRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, checks: list[Check]) -> None:
        await self._db.executemany(
            "INSERT INTO reputation_checks (number, checked_at, source, score, label, flagged)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(c.number, c.checked_at, c.source, c.score, c.label, int(c.flagged)) for c in checks],
        )

    async def latest(self) -> dict[str, Check]:
        """Each number's last answer from any source."""
        rows = await self._db.fetchall(
            "SELECT c.number, c.checked_at, c.source, c.score, c.label, c.flagged"
            " FROM reputation_checks c JOIN (SELECT number, MAX(id) AS id FROM reputation_checks"
            " GROUP BY number) last ON last.id = c.id"
        )
        return {str(r[0]): _check(r) for r in rows}

    async def history(self, number: str, since: float = 0.0) -> list[Check]:
        rows = await self._db.fetchall(
            "SELECT number, checked_at, source, score, label, flagged FROM reputation_checks"
            " WHERE number = ? AND checked_at >= ? ORDER BY id",
            (number, since),
        )
        return [_check(r) for r in rows]


def _check(row: Row) -> Check:
    return Check(
        str(row[0]),
        float(row[1]),
        str(row[2]),
        None if row[3] is None else float(row[3]),
        row[4],
        bool(row[5]),
    )
