"""/pools: each pool with its capacity today and its answer rates."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agent.http.api.base import Call
from agent.http.context import AdminContext
from agent.http.figures import pool_figures


class PoolOut(BaseModel):
    name: str
    reserve: bool
    purposes: list[str]
    on_exhausted: str
    numbers: int
    usable: int = Field(description="numbers that can be handed out now")
    used_today: int
    capacity_today: int = Field(description="sum of today's caps of numbers in service")
    answer_rate_today: float | None
    answer_rate_7_days: float | None = Field(description="the 7 days before today")
    open_alerts: int


class PoolsOut(BaseModel):
    pools: list[PoolOut]


async def pools(ctx: AdminContext, call: Call) -> PoolsOut:
    out = []
    for p in await pool_figures(ctx, with_numbers=False):
        out.append(
            PoolOut(
                name=p.name, reserve=p.reserve, purposes=list(p.purposes),
                on_exhausted=p.on_exhausted, numbers=p.total, usable=p.usable,
                used_today=p.used_today, capacity_today=p.capacity_today,
                answer_rate_today=_round(p.today.answer_rate),
                answer_rate_7_days=_round(p.week.answer_rate), open_alerts=p.open_alerts,
            )
        )  # fmt: skip
    return PoolsOut(pools=out)


def _round(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)
