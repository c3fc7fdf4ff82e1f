"""/stats: answer rates per day, the figures of `trustline stats` (same query, same
aggregate), aggregated in a thread so many rows never hold the event loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from agent.errors import BadRequest
from agent.http.api.base import Call
from agent.http.context import AdminContext
from agent.outbound.policy import local_day
from agent.outcomes.repo import OutcomeRepo
from agent.outcomes.stats import aggregate

MAX_STATS_DAYS = 92


class StatsRowOut(BaseModel):
    day: str
    pool: str
    number: str | None
    dialled: int
    answered: int
    busy: int
    no_answer: int
    failed: int
    unseen: int
    talk_seconds: int
    answer_rate: float | None


class StatsOut(BaseModel):
    stats: list[StatsRowOut]


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: expected YYYY-MM-DD") from None


async def stats(ctx: AdminContext, call: Call) -> StatsOut:
    """The figures of `trustline stats`: the same repository query and the same aggregate."""
    q = call.request.query
    pool = q.get("pool") or None
    by_number = q.get("by_number", "").lower() in ("1", "true", "yes")
    if q.get("from"):
        first = _day(q["from"], "from")
        last = _day(q["to"], "to") if q.get("to") else first
    else:
        try:
            days = int(q.get("days", "7"))
        except ValueError:
            raise BadRequest("days: expected a whole number") from None
        if days < 1:
            raise BadRequest("days: must be at least 1")
        last = _day(q["to"], "to") if q.get("to") else local_day(ctx.clock.now(), ctx.zone())
        first = last - timedelta(days=days - 1)
    if last < first:
        raise BadRequest("to is before from")
    if (last - first).days >= MAX_STATS_DAYS:
        raise BadRequest(f"at most {MAX_STATS_DAYS} days at once")
    since = _epoch(first - timedelta(days=1))
    until = _epoch(last + timedelta(days=2))
    rows = await OutcomeRepo(ctx.read_db).outcomes(since, until, pool)
    config = ctx.config()
    zones = {name: p.rules.timezone for name, p in config.pools.items()}
    default = ctx.zone()
    found = await asyncio.to_thread(
        aggregate,
        rows,
        lambda name: zones.get(name, default),
        by_number=by_number,
        first=first,
        last=last,
    )
    return StatsOut(stats=[StatsRowOut.model_validate(s.as_dict()) for s in found])


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
