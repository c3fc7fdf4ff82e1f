"""The admin audit: one row per state change made through the API, the dashboard or the
token commands (who, role, what, to what, when, from which address).

All writes go through ``AdminAudit.record`` so where rows land is decided in one place.
Must not: put a patient phone number or a token in a row (targets are our own numbers, pool
names, list entry handles, token names, ids).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock
from agent.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # the token's name, or the OS login for a command
    role: str  # a token role, or "cli"
    remote: str  # the peer address, or "local"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AdminAudit:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def record(self, actor: Actor, action: str, target: str, **detail: Any) -> None:
        text = json.dumps({"role": actor.role, "remote": actor.remote, **detail}, sort_keys=True)
        await self._db.execute(
            "INSERT INTO admin_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (self._clock.now(), actor.name, action, target, text),
        )
        log.info(
            "admin: %s (%s from %s) %s %s", actor.name, actor.role, actor.remote, action, target
        )

    async def entries(
        self, *, since: float = 0.0, target: str | None = None, limit: int = 1000
    ) -> list[AuditEntry]:
        sql = "SELECT id, at, actor, action, target, detail FROM admin_audit WHERE at >= ?"
        params: list[object] = [since]
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        rows = await self._db.fetchall(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [
            AuditEntry(int(r[0]), float(r[1]), str(r[2]), str(r[3]), str(r[4]), _detail(str(r[5])))
            for r in rows
        ]


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}
