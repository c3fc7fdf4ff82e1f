"""The admin audit: one row per state change made through the API, the dashboard or the
token commands (who, role, what, to what, when, from which address).

Rows land in compliance's ``admin_audit`` table through its repository (the table's only
writer), so they join the tamper-evident hash chain and the auditor's export; role and
remote address go in ``detail``. Must not: put a patient phone number or a token in a row
(targets are our own numbers, pool names, masked list entries, token names, ids).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock
from agent.compliance.repo import ComplianceRepo
from agent.store import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # the token's name, or the OS login for a command
    role: str  # a token role, or "cli"
    remote: str  # the peer address, or "local"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AdminAudit:
    def __init__(self, db: Database, clock: Clock) -> None:
        self._repo = ComplianceRepo(db)
        self._clock = clock

    async def record(self, actor: Actor, action: str, target: str, **detail: Any) -> None:
        text = json.dumps({"role": actor.role, "remote": actor.remote, **detail}, sort_keys=True)
        await self._repo.add_admin(self._clock.now(), actor.name, action, target, text)
        log.info(
            "admin: %s (%s from %s) %s %s", actor.name, actor.role, actor.remote, action, target
        )

    async def entries(self, *, since: float = 0.0, limit: int = 5000) -> list[AuditEntry]:
        """Admin actions since ``since``, newest first (at most ``limit``)."""
        rows = await self._repo.admin_between(since, self._clock.now() + 1.0)
        return [
            AuditEntry(float(r[0]), str(r[1]), str(r[2]), str(r[3]), _detail(str(r[4])))
            for r in reversed(rows[-limit:])
        ]


def _detail(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}
