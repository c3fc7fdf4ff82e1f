"""SQL of alert incidents and the webhook outbox (tables of migration 0020). Owns both tables.

May: read and write alert_incidents and alert_outbox. Must not: decide what is an incident
(the service does), talk to the network, or hold state. Placeholders are ``?``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.store import Database, Row


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    kind: str
    subject: str
    severity: str
    first_seen: float
    last_seen: float
    resolved_at: float | None
    acked_at: float | None
    payload: dict[str, Any]
    idempotency_key: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "severity": self.severity,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "resolved_at": self.resolved_at,
            "acked_at": self.acked_at,
            "payload": self.payload,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    webhook: str
    event: str
    idempotency_key: str
    body: str
    created_at: float
    attempts: int


_COLUMNS = (
    "id, kind, subject, severity, first_seen, last_seen, resolved_at, acked_at, payload,"
    " idempotency_key"
)
_INCIDENT = "SELECT " + _COLUMNS + " FROM alert_incidents"


def _incident(r: Row) -> Incident:
    return Incident(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        str(r[3]),
        float(r[4]),
        float(r[5]),
        None if r[6] is None else float(r[6]),
        None if r[7] is None else float(r[7]),
        json.loads(r[8]),
        str(r[9]),
    )


class AlertRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def open_or_touch(
        self, kind: str, subject: str, severity: str, now: float, payload: str, key: str
    ) -> tuple[Incident, bool]:
        """One atomic statement: open the incident of (kind, subject), or, when one is open
        already (the unique partial index alert_incidents_open), take its last_seen and
        payload forward (its severity stays what it opened with). Two agents raising the same
        alert at once get one row; the one whose ``key`` it carries opened it."""
        row = await self.db.fetchone(
            "INSERT INTO alert_incidents (kind, subject, severity, first_seen, last_seen,"
            " payload, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (kind, subject) WHERE resolved_at IS NULL"
            " DO UPDATE SET last_seen = excluded.last_seen, payload = excluded.payload"
            " RETURNING " + _COLUMNS,
            (kind, subject, severity, now, now, payload, key),
        )
        assert row is not None
        incident = _incident(row)
        return incident, incident.idempotency_key == key

    async def resolve_open(self, kind: str, subject: str, now: float) -> Incident | None:
        """Close the open incident of (kind, subject) in one conditional statement: of two
        agents resolving it at once, exactly one gets it back."""
        row = await self.db.fetchone(
            "UPDATE alert_incidents SET resolved_at = ?, last_seen = ?"
            " WHERE kind = ? AND subject = ? AND resolved_at IS NULL RETURNING " + _COLUMNS,
            (now, now, kind, subject),
        )
        return None if row is None else _incident(row)

    async def ack(self, incident_id: int, now: float) -> bool:
        changed = await self.db.execute(
            "UPDATE alert_incidents SET acked_at = COALESCE(acked_at, ?) WHERE id = ?",
            (now, incident_id),
        )
        return changed > 0

    async def incidents(self, *, open_only: bool, since: float = 0.0) -> list[Incident]:
        where = " WHERE last_seen >= ?" + (" AND resolved_at IS NULL" if open_only else "")
        rows = await self.db.fetchall(_INCIDENT + where + " ORDER BY id", (since,))
        return [_incident(r) for r in rows]

    async def incidents_between(self, since: float, until: float) -> list[Incident]:
        rows = await self.db.fetchall(
            _INCIDENT + " WHERE first_seen >= ? AND first_seen < ? ORDER BY id", (since, until)
        )
        return [_incident(r) for r in rows]

    # -- outbox ----------------------------------------------------------------------------
    async def enqueue(
        self, incident_id: int | None, webhook: str, event: str, key: str, body: str, now: float
    ) -> None:
        await self.db.execute(
            "INSERT INTO alert_outbox (incident_id, webhook, event, idempotency_key, body,"
            " created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (idempotency_key, webhook) DO NOTHING",
            (incident_id, webhook, event, key, body, now, now),
        )

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[OutboxRow]:
        """Rows due now, leased until ``lease_until`` so no other deliverer sends them
        meanwhile; a deliverer killed mid-send leaves the lease to run out, then re-sends.

        One conditional UPDATE, no transaction: deliverers of several agents never wait for
        each other, and a row another one leased first no longer matches (PostgreSQL
        re-checks the condition on the row it waited for), so it is never sent twice."""
        due = "delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?"
        rows = await self.db.fetchall(
            f"UPDATE alert_outbox SET next_attempt_at = ? WHERE {due} AND id IN"
            f" (SELECT id FROM alert_outbox WHERE {due} ORDER BY id LIMIT ?)"
            " RETURNING id, webhook, event, idempotency_key, body, created_at, attempts",
            (lease_until, now, now, limit),
        )
        return sorted(
            (
                OutboxRow(
                    int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), float(r[5]), int(r[6])
                )
                for r in rows
            ),
            key=lambda row: row.id,
        )

    async def delivered(self, row_id: int, now: float) -> None:
        await self.db.execute(
            "UPDATE alert_outbox SET delivered_at = ?, attempts = attempts + 1, last_error = NULL"
            " WHERE id = ?",
            (now, row_id),
        )

    async def failed(self, row_id: int, next_at: float, error: str) -> None:
        await self.db.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?"
            " WHERE id = ?",
            (next_at, error[:500], row_id),
        )

    async def gave_up(self, row_id: int, now: float, error: str) -> None:
        await self.db.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, gave_up_at = ?, last_error = ?"
            " WHERE id = ?",
            (now, error[:500], row_id),
        )

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT MIN(next_attempt_at) FROM alert_outbox"
            " WHERE delivered_at IS NULL AND gave_up_at IS NULL"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def pending(self) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM alert_outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL"
        )
        return int(row[0]) if row else 0
