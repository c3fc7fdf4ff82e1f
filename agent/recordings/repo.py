"""SQL for recording metadata and the recordings audit (tables from migration 0004).

May: read and write the ``recordings`` and ``recording_audit`` tables through ``Database``.
Must not: touch files, hold keys, or decide policy (retention age, who may decrypt).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.store import Database


@dataclass(frozen=True)
class RecordingRow:
    id: int
    uniqueid: str | None
    path: str
    source_name: str
    recorded_at: float
    sealed_at: float
    plain_size: int
    size: int
    key_id: str
    sha256: str
    purged_at: float | None


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    action: str
    recording_id: int
    operator: str
    reason: str
    outcome: str
    detail: dict[str, Any]


_COLUMNS = (
    "id, uniqueid, path, source_name, recorded_at, sealed_at, plain_size, size, key_id, sha256,"
    " purged_at"
)


def _row(r: Any) -> RecordingRow:
    return RecordingRow(*tuple(r))


class RecordingsRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_sealed(
        self,
        *,
        uniqueid: str | None,
        path: str,
        source_name: str,
        recorded_at: float,
        sealed_at: float,
        plain_size: int,
        size: int,
        key_id: str,
        sha256: str,
    ) -> int:
        """Insert (or refresh, after a crash between the two) the live row of a sealed file."""
        async with self._db.transaction() as tx:
            existing = await tx.fetchone(
                "SELECT id FROM recordings WHERE path = ? AND purged_at IS NULL", (path,)
            )
            if existing is not None:
                await tx.execute(
                    "UPDATE recordings SET uniqueid = COALESCE(?, uniqueid), size = ?,"
                    " key_id = ?, sha256 = ?, plain_size = ? WHERE id = ?",
                    (uniqueid, size, key_id, sha256, plain_size, existing[0]),
                )
                return int(existing[0])
            row = await tx.fetchone(
                "INSERT INTO recordings (uniqueid, path, source_name, recorded_at, sealed_at,"
                " plain_size, size, key_id, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (uniqueid, path, source_name, recorded_at, sealed_at, plain_size, size, key_id,
                 sha256),
            )
            assert row is not None
            return int(row[0])

    async def get(self, recording_id: int) -> RecordingRow | None:
        r = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM recordings WHERE id = ?", (recording_id,)
        )
        return _row(r) if r is not None else None

    async def live_by_path(self, path: str) -> RecordingRow | None:
        r = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM recordings WHERE path = ? AND purged_at IS NULL", (path,)
        )
        return _row(r) if r is not None else None

    async def live_paths(self) -> set[str]:
        rows = await self._db.fetchall("SELECT path FROM recordings WHERE purged_at IS NULL")
        return {str(r[0]) for r in rows}

    async def listing(self, *, limit: int, include_purged: bool) -> list[RecordingRow]:
        where = "" if include_purged else "WHERE purged_at IS NULL"
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings {where} ORDER BY recorded_at DESC, id DESC"
            " LIMIT ?",
            (limit,),
        )
        return [_row(r) for r in rows]

    async def live(self) -> list[RecordingRow]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings WHERE purged_at IS NULL ORDER BY id"
        )
        return [_row(r) for r in rows]

    async def not_wrapped_by(self, key_id: str) -> list[RecordingRow]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings WHERE purged_at IS NULL AND key_id <> ?"
            " ORDER BY id",
            (key_id,),
        )
        return [_row(r) for r in rows]

    async def recorded_before(self, cutoff: float) -> list[RecordingRow]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings WHERE purged_at IS NULL AND recorded_at < ?"
            " ORDER BY recorded_at",
            (cutoff,),
        )
        return [_row(r) for r in rows]

    async def count_by_key(self) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT key_id, COUNT(*) FROM recordings WHERE purged_at IS NULL GROUP BY key_id"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def rewrapped(self, recording_id: int, *, key_id: str, sha256: str, size: int) -> None:
        await self._db.execute(
            "UPDATE recordings SET key_id = ?, sha256 = ?, size = ? WHERE id = ?",
            (key_id, sha256, size, recording_id),
        )

    async def mark_purged(
        self, row: RecordingRow, *, at: float, operator: str, reason: str
    ) -> None:
        """Mark the row purged and record what was deleted, in one transaction."""
        detail = {
            "uniqueid": row.uniqueid,
            "path": row.path,
            "recorded_at": row.recorded_at,
            "size": row.size,
            "sha256": row.sha256,
            "key_id": row.key_id,
        }
        async with self._db.transaction() as tx:
            await tx.execute("UPDATE recordings SET purged_at = ? WHERE id = ?", (at, row.id))
            await tx.execute(
                "INSERT INTO recording_audit (at, action, recording_id, operator, reason, outcome,"
                " detail) VALUES (?, 'purge', ?, ?, ?, 'ok', ?)",
                (at, row.id, operator, reason, json.dumps(detail, sort_keys=True)),
            )

    async def audit_started(
        self, *, at: float, action: str, recording_id: int, operator: str, reason: str,
        detail: dict[str, Any],
    ) -> int:
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO recording_audit (at, action, recording_id, operator, reason, outcome,"
                " detail) VALUES (?, ?, ?, ?, ?, 'started', ?) RETURNING id",
                (at, action, recording_id, operator, reason, json.dumps(detail, sort_keys=True)),
            )
            assert row is not None
            return int(row[0])

    async def audit_outcome(self, audit_id: int, outcome: str) -> None:
        await self._db.execute(
            "UPDATE recording_audit SET outcome = ? WHERE id = ?", (outcome, audit_id)
        )

    async def audit(self, recording_id: int | None = None) -> list[AuditRow]:
        sql = (
            "SELECT id, at, action, recording_id, operator, reason, outcome, detail"
            " FROM recording_audit"
        )
        params: tuple[Any, ...] = ()
        if recording_id is not None:
            sql += " WHERE recording_id = ?"
            params = (recording_id,)
        rows = await self._db.fetchall(sql + " ORDER BY id", params)
        return [
            AuditRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7] or "{}"))
            for r in rows
        ]
