"""SQL of patient contact (tables of migration 0050): the SMS outbox, pins, the CNAM registry.

May: read and write contact_sms_outbox, contact_pins, cnam_provisioned. Must not: decide
anything, talk to the network, hold state, or see a patient number in clear (the outbox
holds a sealed blob it cannot read). Placeholders are ``?``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store import Database


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    idempotency_key: str
    purpose: str
    sealed: str | None
    expires_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Pin:
    id: int
    callee_hash: str
    purpose: str
    pool: str
    number: str
    case_ref: str | None
    pinned_at: float
    call_at: float
    expires_at: float
    reserved_day: str
    used_at: float | None


_PIN = (
    "SELECT id, callee_hash, purpose, pool, number, case_ref, pinned_at, call_at, expires_at,"
    " reserved_day, used_at FROM contact_pins"
)


def _pin(r: object) -> Pin:
    row = list(r)  # type: ignore[call-overload]
    return Pin(
        int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]),
        row[5], float(row[6]), float(row[7]), float(row[8]), str(row[9]),
        None if row[10] is None else float(row[10]),
    )  # fmt: skip


class ContactRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- SMS outbox ------------------------------------------------------------------------
    async def enqueue(
        self,
        key: str,
        purpose: str,
        pool: str | None,
        callee_hash: str,
        sealed: str,
        now: float,
        send_at: float,
        expires_at: float,
    ) -> bool:
        """Queue a message; False when this key is already queued (a repeated announce)."""
        changed = await self.db.execute(
            "INSERT INTO contact_sms_outbox (idempotency_key, purpose, pool, callee_hash, sealed,"
            " created_at, send_at, expires_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            (key, purpose, pool, callee_hash, sealed, now, send_at, expires_at, send_at),
        )
        return changed > 0

    async def claim_due(self, now: float, lease_until: float, limit: int) -> list[OutboxRow]:
        """Messages due now, leased until ``lease_until`` so no other agent sends them
        meanwhile; a sender killed mid-send leaves the lease to run out, then sends again."""
        async with self.db.transaction():
            rows = await self.db.fetchall(
                "SELECT id, idempotency_key, purpose, sealed, expires_at, attempts"
                " FROM contact_sms_outbox WHERE sent_at IS NULL AND gave_up_at IS NULL"
                " AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (now, limit),
            )
            for r in rows:
                await self.db.execute(
                    "UPDATE contact_sms_outbox SET next_attempt_at = ? WHERE id = ?",
                    (lease_until, r[0]),
                )
        return [
            OutboxRow(int(r[0]), str(r[1]), str(r[2]), r[3], float(r[4]), int(r[5])) for r in rows
        ]

    async def sent(self, row_id: int, now: float, provider_ref: str | None) -> None:
        await self.db.execute(
            "UPDATE contact_sms_outbox SET sent_at = ?, attempts = attempts + 1, sealed = NULL,"
            " last_error = NULL, provider_ref = ? WHERE id = ?",
            (now, provider_ref, row_id),
        )

    async def retry(self, row_id: int, next_at: float, error: str) -> None:
        await self.db.execute(
            "UPDATE contact_sms_outbox SET attempts = attempts + 1, next_attempt_at = ?,"
            " last_error = ? WHERE id = ?",
            (next_at, error[:200], row_id),
        )

    async def gave_up(self, row_id: int, now: float, error: str, *, attempted: bool) -> None:
        await self.db.execute(
            "UPDATE contact_sms_outbox SET attempts = attempts + ?, gave_up_at = ?, sealed = NULL,"
            " last_error = ? WHERE id = ?",
            (1 if attempted else 0, now, error[:200], row_id),
        )

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT MIN(next_attempt_at) FROM contact_sms_outbox"
            " WHERE sent_at IS NULL AND gave_up_at IS NULL"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def outbox(self) -> list[dict[str, object]]:
        """Every message's state, for listings and tests (no destination, no text)."""
        rows = await self.db.fetchall(
            "SELECT id, idempotency_key, purpose, pool, attempts, sent_at, gave_up_at,"
            " last_error, sealed IS NOT NULL, send_at, expires_at, provider_ref"
            " FROM contact_sms_outbox ORDER BY id"
        )
        names = (
            "id", "key", "purpose", "pool", "attempts", "sent_at", "gave_up_at", "last_error",
            "sealed", "send_at", "expires_at", "provider_ref",
        )  # fmt: skip
        return [dict(zip(names, r, strict=True)) for r in rows]

    # -- pins ------------------------------------------------------------------------------
    async def open_pin(self, callee_hash: str, purpose: str) -> Pin | None:
        row = await self.db.fetchone(
            _PIN + " WHERE callee_hash = ? AND purpose = ? AND released_at IS NULL",
            (callee_hash, purpose),
        )
        return None if row is None else _pin(row)

    async def add_pin(self, pin: Pin) -> int:
        row = await self.db.fetchone(
            "INSERT INTO contact_pins (callee_hash, purpose, pool, number, case_ref, pinned_at,"
            " call_at, expires_at, reserved_day) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                pin.callee_hash, pin.purpose, pin.pool, pin.number, pin.case_ref,
                pin.pinned_at, pin.call_at, pin.expires_at, pin.reserved_day,
            ),
        )  # fmt: skip
        assert row is not None
        return int(row[0])

    async def release(self, pin_id: int, now: float, reason: str) -> bool:
        changed = await self.db.execute(
            "UPDATE contact_pins SET released_at = ?, release_reason = ?"
            " WHERE id = ? AND released_at IS NULL",
            (now, reason, pin_id),
        )
        return changed > 0

    async def mark_used(self, pin_id: int, now: float) -> bool:
        """The call came: the reserved cap unit is spent by it (True the first time only)."""
        changed = await self.db.execute(
            "UPDATE contact_pins SET used_at = ? WHERE id = ? AND used_at IS NULL",
            (now, pin_id),
        )
        return changed > 0

    # -- CNAM ------------------------------------------------------------------------------
    async def add_provisioned(self, number: str, name: str, on: float, now: float) -> None:
        await self.db.execute(
            "INSERT INTO cnam_provisioned (number, name, provisioned_on, recorded_at)"
            " VALUES (?, ?, ?, ?)",
            (number, name, on, now),
        )

    async def latest_provisioned(self) -> dict[str, tuple[str, float]]:
        """number -> (name, provisioned_on) of its latest provisioning."""
        rows = await self.db.fetchall(
            "SELECT number, name, provisioned_on FROM cnam_provisioned ORDER BY provisioned_on, id"
        )
        return {str(r[0]): (str(r[1]), float(r[2])) for r in rows}

    async def open_pins(self) -> list[Pin]:
        rows = await self.db.fetchall(_PIN + " WHERE released_at IS NULL ORDER BY id")
        return [_pin(r) for r in rows]

    async def recent_pins(self, since: float) -> dict[str, float]:
        """callee hash -> latest pin time, for pins made since ``since`` (callbacks)."""
        rows = await self.db.fetchall(
            "SELECT callee_hash, MAX(pinned_at) FROM contact_pins WHERE pinned_at >= ?"
            " GROUP BY callee_hash",
            (since,),
        )
        return {str(r[0]): float(r[1]) for r in rows}
