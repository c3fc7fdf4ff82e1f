"""/alerts: alert incidents, and acknowledging one."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent.http.api.base import Call, parse_id
from agent.http.context import AdminContext


class AlertOut(BaseModel):
    id: int
    kind: str
    subject: str
    severity: str
    message: str
    first_seen: float
    last_seen: float
    resolved_at: float | None
    acked_at: float | None


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class AckOut(BaseModel):
    id: int
    acked: bool = Field(description="false when no such alert exists")


async def alerts(ctx: AdminContext, call: Call) -> AlertsOut:
    open_only = call.request.query.get("open", "").lower() in ("1", "true", "yes")
    incidents = await ctx.actions.alerts().incidents(open_only=open_only)
    return AlertsOut(
        alerts=[
            AlertOut(
                id=i.id, kind=i.kind, subject=i.subject, severity=i.severity,
                message=str(i.payload.get("message", "")), first_seen=i.first_seen,
                last_seen=i.last_seen, resolved_at=i.resolved_at, acked_at=i.acked_at,
            )
            for i in incidents[:500]
        ]
    )  # fmt: skip


async def ack(ctx: AdminContext, call: Call) -> AckOut:
    incident_id = parse_id(call.request.match_info["id"])
    return AckOut(id=incident_id, acked=await ctx.actions.ack(call.actor, incident_id))
