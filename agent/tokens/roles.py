"""Roles and what each may do. Pure: no I/O.

``viewer`` reads pools, numbers, stats, alerts and screening; ``operator`` also acts (spam
reports, reinstate, acknowledge alerts, edit block/allow lists); ``auditor`` opens recordings
and exports the admin audit, nothing else; ``admin`` is an operator who also manages tokens
and exports the audit. Recordings stay the auditor's alone: a supervisor cannot listen in.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["viewer", "operator", "auditor", "admin"]
Permission = Literal["read", "act", "recordings", "audit", "tokens"]

ROLES: tuple[Role, ...] = ("viewer", "operator", "auditor", "admin")

GRANTS: dict[str, frozenset[Permission]] = {
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "act"}),
    "auditor": frozenset({"recordings", "audit"}),
    "admin": frozenset({"read", "act", "audit", "tokens"}),
}


def allows(role: str, permission: Permission) -> bool:
    return permission in GRANTS.get(role, frozenset())
