"""/numbers, /reports and /numbers/{number}/reinstate: our caller IDs, spam reports against
them, and ending a quarantine. A report against a number that is not ours answers it masked."""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel, Field

from agent.http.api.base import Call
from agent.http.context import AdminContext
from agent.http.figures import pool_figures


class NumberOut(BaseModel):
    number: str = Field(description="one of our caller IDs, E.164")
    name: str
    pool: str = Field(description="the pool it serves now (a promoted reserve number: that pool)")
    state: str
    until: float | None = Field(None, description="end of a rest or quarantine (UTC epoch)")
    used: int
    cap: int


class NumbersOut(BaseModel):
    numbers: list[NumberOut]


class ReportIn(BaseModel):
    number: str = Field(max_length=40, description="the caller ID reported, as the patient gave it")
    source: str = Field("api", max_length=40, description="where the report came from")
    id: str | None = Field(
        None,
        max_length=100,
        description="idempotency key: a report sent again with the same id counts once",
    )


class ReportOut(BaseModel):
    number: str = Field(description="E.164 when ours; masked (never a stranger's number) otherwise")
    ours: bool
    reports_today: int
    quarantined: bool
    duplicate: bool


class ReinstateOut(BaseModel):
    number: str
    reinstated: bool = Field(description="false when it was neither quarantined nor resting")
    state: str


async def numbers(ctx: AdminContext, call: Call) -> NumbersOut:
    pools = await pool_figures(ctx)
    return NumbersOut(
        numbers=[
            NumberOut(
                number=n.number, name=n.name, pool=n.pool, state=n.state, until=n.until,
                used=n.used, cap=n.cap,
            )
            for p in pools
            for n in p.numbers
        ]
    )  # fmt: skip


async def report(ctx: AdminContext, call: Call) -> ReportOut:
    body = cast(ReportIn, call.body)
    result = await ctx.actions.report_spam(call.actor, body.number, body.source, body.id)
    return ReportOut(
        number=result.number,
        ours=result.ours,
        reports_today=result.reports_today,
        quarantined=result.quarantined,
        duplicate=result.duplicate,
    )


async def reinstate(ctx: AdminContext, call: Call) -> ReinstateOut:
    number, changed = await ctx.actions.reinstate(call.actor, call.request.match_info["number"])
    rows = ctx.actions.outbound().number_rows()
    state = next((str(r["state"]) for r in rows if r["number"] == number), "unknown")
    return ReinstateOut(number=number, reinstated=changed, state=state)
