"""SQL for recording metadata and the recordings audit (tables from migrations 0004, 0005).

May: read and write the ``recordings`` and ``recording_audit`` tables through ``Database``.
Must not: touch files, hold keys, or decide policy (retention age, who may decrypt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
    pending_sha256: str | None = None  # a re-wrap's new digest, stored before the file changes
    rejected_at: float | None = None  # set aside: the file at ``path`` does not open

    @property
    def state(self) -> str:
        if self.purged_at is not None:
            return "purged"
        return "rejected" if self.rejected_at is not None else "sealed"


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
    " purged_at, pending_sha256, rejected_at"
)
_SEALED = "purged_at IS NULL AND rejected_at IS NULL"  # live and opens: verify, rewrap, keys


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
        older: Sequence[str] = (),
    ) -> int:
        """Insert the live row of a sealed file (or refresh it, after a crash between the two).

        ``sha256`` is the file's digest text; ``older``, other texts naming the same file (its
        SHA-256, as a row written before BLAKE3 holds it), so such a row is refreshed too.

        A live row at ``path`` that describes another file (its recording was set aside or
        lost before a crash let us say so) is never overwritten: it is marked purged with an
        audit row, and the new recording gets a row of its own.
        """
        async with self._db.transaction() as tx:
            existing = await self._live_row_of(tx, path, (sha256, *older), at=sealed_at)
            if existing is not None:
                await tx.execute(
                    "UPDATE recordings SET uniqueid = COALESCE(?, uniqueid), size = ?,"
                    " key_id = ?, sha256 = ?, plain_size = ?, pending_sha256 = NULL WHERE id = ?",
                    (uniqueid, size, key_id, sha256, plain_size, existing),
                )
                return existing
            row = await tx.fetchone(
                "INSERT INTO recordings (uniqueid, path, source_name, recorded_at, sealed_at,"
                " plain_size, size, key_id, sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                (
                    uniqueid,
                    path,
                    source_name,
                    recorded_at,
                    sealed_at,
                    plain_size,
                    size,
                    key_id,
                    sha256,
                ),
            )
            assert row is not None
            return int(row[0])

    async def _live_row_of(
        self, tx: Database, path: str, digests: Sequence[str], *, at: float
    ) -> int | None:
        """The id of the live row at ``path`` if it describes this file (same or pending digest).

        A live row there that describes another file is marked purged (with its audit row)
        and None is returned: the new recording gets a row of its own.
        """
        existing = await tx.fetchone(
            "SELECT id, sha256, pending_sha256 FROM recordings WHERE path = ?"
            " AND purged_at IS NULL",
            (path,),
        )
        if existing is None:
            return None
        if existing[1] in digests or existing[2] in digests:
            return int(existing[0])
        old = await tx.fetchone(f"SELECT {_COLUMNS} FROM recordings WHERE id = ?", (existing[0],))
        assert old is not None
        await self._purge(
            tx,
            _row(old),
            at=at,
            operator="agent",
            outcome="ok",
            reason="its file was replaced by another recording under the same name"
            " (the file did not open and was set aside, or was lost)",
        )
        return None

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
            f"SELECT {_COLUMNS} FROM recordings {where} ORDER BY recorded_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [_row(r) for r in rows]

    async def live(self) -> list[RecordingRow]:
        """Live recordings whose file opens (set-aside ones excluded)."""
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings WHERE {_SEALED} ORDER BY id"
        )
        return [_row(r) for r in rows]

    async def not_wrapped_by(self, key_id: str) -> list[RecordingRow]:
        rows = await self._db.fetchall(
            f"SELECT {_COLUMNS} FROM recordings WHERE {_SEALED} AND key_id <> ? ORDER BY id",
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
            f"SELECT key_id, COUNT(*) FROM recordings WHERE {_SEALED} GROUP BY key_id"
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def set_pending(self, recording_id: int, sha256: str) -> None:
        """Before a re-wrap replaces the file: the digest it will have."""
        await self._db.execute(
            "UPDATE recordings SET pending_sha256 = ? WHERE id = ?", (sha256, recording_id)
        )

    async def rewrapped(self, recording_id: int, *, key_id: str, sha256: str, size: int) -> None:
        await self._db.execute(
            "UPDATE recordings SET key_id = ?, sha256 = ?, size = ?, pending_sha256 = NULL"
            " WHERE id = ?",
            (key_id, sha256, size, recording_id),
        )

    async def record_rejected(
        self,
        *,
        original: str,
        aside: str,
        at: float,
        uniqueid: str | None,
        source_name: str,
        recorded_at: float,
        size: int,
        sha256: str,
        moved_now: bool,
    ) -> int:
        """A sealed file that did not open was moved from ``original`` to ``aside``.

        ``moved_now``: we just moved it, so the live row that named ``original`` (if any) is
        its row and follows it there, marked rejected, keeping its ID and audit history.
        Otherwise (a set-aside file found later, whose row may be long gone or now name a newer
        recording at ``original``) a rejected row is added. Either way it is listed, and
        retention deletes it like any recording. One audit row says what happened.
        """
        async with self._db.transaction() as tx:
            existing = None
            if moved_now:
                existing = await tx.fetchone(
                    "SELECT id FROM recordings WHERE path = ? AND purged_at IS NULL", (original,)
                )
            if existing is not None:
                rec_id = int(existing[0])
                await tx.execute(
                    "UPDATE recordings SET path = ?, rejected_at = ?, pending_sha256 = NULL"
                    " WHERE id = ?",
                    (aside, at, rec_id),
                )
            else:
                row = await tx.fetchone(
                    "INSERT INTO recordings (uniqueid, path, source_name, recorded_at, sealed_at,"
                    " plain_size, size, key_id, sha256, rejected_at)"
                    " VALUES (?, ?, ?, ?, ?, 0, ?, '-', ?, ?) RETURNING id",
                    (uniqueid, aside, source_name, recorded_at, at, size, sha256, at),
                )
                assert row is not None
                rec_id = int(row[0])
            detail = {"from": original, "to": aside, "size": size, "sha256": sha256}
            await tx.execute(
                "INSERT INTO recording_audit (at, action, recording_id, operator, reason, outcome,"
                " detail) VALUES (?, 'set_aside', ?, 'agent', ?, 'ok', ?)",
                (
                    at,
                    rec_id,
                    "sealed file did not open; moved aside, kept until retention",
                    json.dumps(detail, sort_keys=True),
                ),
            )
            return rec_id

    async def mark_purged(
        self, row: RecordingRow, *, at: float, operator: str, reason: str
    ) -> None:
        """Mark the row purged and record what was deleted, in one transaction."""
        async with self._db.transaction() as tx:
            await self._purge(tx, row, at=at, operator=operator, reason=reason, outcome="ok")

    @staticmethod
    async def _purge(
        tx: Database, row: RecordingRow, *, at: float, operator: str, reason: str, outcome: str
    ) -> None:
        detail = {
            "uniqueid": row.uniqueid,
            "path": row.path,
            "recorded_at": row.recorded_at,
            "size": row.size,
            "sha256": row.sha256,
            "key_id": row.key_id,
            "state": row.state,
        }
        await tx.execute("UPDATE recordings SET purged_at = ? WHERE id = ?", (at, row.id))
        await tx.execute(
            "INSERT INTO recording_audit (at, action, recording_id, operator, reason, outcome,"
            " detail) VALUES (?, 'purge', ?, ?, ?, ?, ?)",
            (at, row.id, operator, reason, outcome, json.dumps(detail, sort_keys=True)),
        )

    async def audit_started(
        self,
        *,
        at: float,
        action: str,
        recording_id: int,
        operator: str,
        reason: str,
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

    async def started_audits(self, action: str) -> list[tuple[int, dict[str, Any]]]:
        """Audit rows of ``action`` still ``started``: running, or their process died."""
        rows = await self._db.fetchall(
            "SELECT id, detail FROM recording_audit WHERE action = ? AND outcome = 'started'"
            " ORDER BY id",
            (action,),
        )
        return [(int(r[0]), json.loads(r[1] or "{}")) for r in rows]

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
