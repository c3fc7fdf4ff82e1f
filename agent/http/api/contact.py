"""/announce: pin the caller ID of a coming call to its callee (patient contact); the
callee's number is audited masked, never stored in clear."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, Field

from agent.errors import BadRequest
from agent.http.api.base import Call
from agent.http.context import AdminContext
from agent.phone import mask


class AnnounceIn(BaseModel):
    purpose: str = Field(max_length=32)
    callee: str = Field(max_length=40, description="the patient's number (never stored in clear)")
    case_ref: str | None = Field(None, pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    at: float | None = Field(None, description="planned call time (UTC epoch); default now")
    area: str | None = Field(None, max_length=5, description="postal code or département")
    sms: bool = Field(False, description="queue the purpose's pre-call SMS")


class AnnounceOut(BaseModel):
    pool: str
    number: str = Field(description="the pinned caller ID the call will present")
    name: str
    expires_at: float
    sms_at: float | None
    reused: bool = Field(description="an open pin for this callee and purpose already existed")


async def announce(ctx: AdminContext, call: Call) -> AnnounceOut:
    body = cast(AnnounceIn, call.body)
    if ctx.contact is None:
        raise BadRequest("patient contact is not running on this agent")
    pinned = await ctx.contact.announce(
        body.purpose, body.callee, case_ref=body.case_ref, at=body.at, sms=body.sms, area=body.area
    )
    await ctx.actions.audit.record(
        call.actor, "announce", pinned.number, purpose=body.purpose, sms=body.sms,
        callee=mask(body.callee),
    )  # fmt: skip
    return AnnounceOut(
        pool=pinned.pool, number=pinned.number, name=pinned.name, expires_at=pinned.expires_at,
        sms_at=pinned.sms_at, reused=pinned.reused,
    )  # fmt: skip
