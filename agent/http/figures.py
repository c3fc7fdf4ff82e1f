"""The figures the overview, the pool pages and the API's pools answer share: per pool,
usable / total numbers, used today / capacity, answer rate today and over the last 7 days,
open alerts. Built from the outbound service's in-memory view (states, counts) and one
grouped query of the read-only views (rates); no loop over call rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from agent.admin.views import Buckets, Counts, day_bounds, merged
from agent.alerts.repo import Incident
from agent.http.context import AdminContext
from agent.outbound.policy import local_day

WEEK = 7


@dataclass(slots=True)
class NumberLine:
    number: str
    name: str
    pool: str
    home_pool: str
    state: str
    until: float | None
    used: int
    cap: int
    today: Counts = field(default_factory=Counts)
    week: Counts = field(default_factory=Counts)


@dataclass(slots=True)
class PoolFigures:
    name: str
    reserve: bool
    purposes: tuple[str, ...]
    on_exhausted: str
    total: int = 0
    usable: int = 0
    used_today: int = 0
    capacity_today: int = 0
    today: Counts = field(default_factory=Counts)
    week: Counts = field(default_factory=Counts)  # the 7 days before today
    open_alerts: int = 0
    numbers: list[NumberLine] = field(default_factory=list)


def _state(
    raw: str, until: tuple[str, float] | None, *, in_reserve: bool, warming: bool
) -> tuple[str, float | None]:
    """The outbound view's state, with "until" from the store for rests and quarantines; a
    number waiting in a reserve pool is "reserve", a promoted one below its full cap says it
    is warming up."""
    base = raw.split(" (", 1)[0]
    if in_reserve and base == "active":
        return "reserve", None
    if warming:
        raw = raw.replace(" (reserve from", " (warming up, reserve from")
    if until is not None and base in ("quarantined", "resting"):
        return raw, until[1]
    return raw, None


async def pool_figures(ctx: AdminContext, *, with_numbers: bool = True) -> list[PoolFigures]:
    service = ctx.actions.outbound()
    config = service.config
    now = ctx.clock.now()
    rows = service.number_rows()
    usable = service.usable_by_pool()
    until = await ctx.views.until(now)
    pools = {
        name: PoolFigures(name, p.reserve, p.purposes, p.rules.on_exhausted)
        for name, p in config.pools.items()
    }
    for name, figures in pools.items():
        figures.usable = usable.get(name, 0)
    for r in rows:
        pool = pools.get(str(r["pool"]))
        if pool is None:
            continue
        number = str(r["number"])
        cfg = config.numbers.get(number)
        used, cap = int(str(r["used"])), int(str(r["cap"]))
        state, ends = _state(
            str(r["state"]),
            until.get(number),
            in_reserve=pool.reserve,
            warming=cfg is not None and cap < cfg.daily_cap,
        )
        pool.total += 1
        pool.used_today += used
        if not state.startswith(("inactive", "quarantined", "resting", "reserve")):
            pool.capacity_today += cap
        if with_numbers:
            pool.numbers.append(
                NumberLine(
                    number, str(r["name"]), pool.name, cfg.pool if cfg else pool.name,
                    state, ends, used, cap,
                )
            )  # fmt: skip
    # Answer rates: the 7 days before today and today, per pool time zone (one query each).
    by_zone: dict[str, list[str]] = defaultdict(list)
    for name in pools:
        by_zone[str(ctx.zone(name))].append(name)
    for names in by_zone.values():
        zone = ctx.zone(names[0])
        today = local_day(now, zone)
        bounds = day_bounds(zone, today - timedelta(days=WEEK), WEEK + 1)
        buckets = await ctx.views.recent_buckets(bounds, pools=names)
        _fill(pools, buckets, with_numbers)
    alerts = await ctx.actions.alerts().incidents(open_only=True)
    _count_alerts(pools, alerts, rows)
    return list(pools.values())


def _fill(pools: dict[str, PoolFigures], buckets: Buckets, with_numbers: bool) -> None:
    lines = {n.number: n for p in pools.values() for n in p.numbers} if with_numbers else {}
    for (i, pool_name, number), counts in buckets.items():
        pool = pools.get(pool_name)
        if pool is None:
            continue
        target = pool.today if i == WEEK else pool.week
        target.add(counts)
        line = lines.get(number)
        if line is not None:
            (line.today if i == WEEK else line.week).add(counts)


def _count_alerts(
    pools: dict[str, PoolFigures], alerts: list[Incident], rows: list[dict[str, object]]
) -> None:
    pool_of = {str(r["number"]): str(r["pool"]) for r in rows}
    for incident in alerts:
        name = incident.subject if incident.subject in pools else pool_of.get(incident.subject)
        if name is not None:
            pools[name].open_alerts += 1


def rate_text(counts: Counts) -> str:
    rate = counts.answer_rate
    return "-" if rate is None else f"{rate:.0%}"


__all__ = ["NumberLine", "PoolFigures", "merged", "pool_figures", "rate_text"]
