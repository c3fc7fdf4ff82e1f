"""/audit and /tokens: exporting the admin audit, and managing API tokens (a secret is shown
once; only its hash is stored)."""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from agent.errors import BadRequest
from agent.http.api.base import Call
from agent.http.context import AdminContext


class AuditEntryOut(BaseModel):
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    state: Literal["live", "expired", "revoked"]
    created_at: float
    expires_at: float | None
    last_used_at: float | None


class TokensOut(BaseModel):
    tokens: list[TokenOut]


class TokenCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["viewer", "operator", "auditor", "admin"]
    expires_days: float | None = Field(None, gt=0, le=3650)


class TokenCreatedOut(BaseModel):
    token: TokenOut
    secret: str = Field(description="shown once; only its hash is stored")


class RevokeOut(BaseModel):
    name: str
    revoked: bool


async def audit(ctx: AdminContext, call: Call) -> AuditOut:
    try:
        since = float(call.request.query.get("since", "0"))
    except ValueError:
        raise BadRequest("since: UTC epoch seconds") from None
    rows = await ctx.actions.audit.entries(since=since, limit=5000)
    return AuditOut(
        entries=[
            AuditEntryOut(at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail)
            for r in rows
        ]
    )


def _token_out(ctx: AdminContext, r: Any) -> TokenOut:
    now = ctx.clock.now()
    state = "revoked" if r.revoked_at is not None else ("live" if r.live(now) else "expired")
    return TokenOut(
        id=r.id, name=r.name, role=r.role, state=state, created_at=r.created_at,
        expires_at=r.expires_at, last_used_at=r.last_used_at,
    )  # fmt: skip


async def tokens(ctx: AdminContext, call: Call) -> TokensOut:
    return TokensOut(tokens=[_token_out(ctx, r) for r in await ctx.actions.tokens.listing()])


async def token_create(ctx: AdminContext, call: Call) -> TokenCreatedOut:
    body = cast(TokenCreateIn, call.body)
    row, secret = await ctx.actions.token_create(
        call.actor, body.name, body.role, body.expires_days
    )
    return TokenCreatedOut(token=_token_out(ctx, row), secret=secret)


async def token_revoke(ctx: AdminContext, call: Call) -> RevokeOut:
    name = call.request.match_info["name"]
    return RevokeOut(name=name, revoked=await ctx.actions.token_revoke(call.actor, name))
