"""The pure side of the outbound number view: numbers' states built from what the store holds,
each pool's local day, and how a number reads in a listing. No I/O: the service reads the
store, holds the view and keeps it in step.
"""

from __future__ import annotations

from datetime import date, datetime, time

from agent.config import Config, PoolConfig
from agent.contact.presence import number_area
from agent.outbound.policy import NumberState, local_day, next_midnight
from agent.outbound.repo import NumberRow


class PoolDays:
    """``local_day`` for each pool, remembered until its next midnight (a hot path)."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[float, float, date]] = {}  # pool -> [start, end), day

    def today(self, pool: PoolConfig, now: float) -> date:
        memo = self._memo.get(pool.name)
        if memo is not None and memo[0] <= now < memo[1]:
            return memo[2]
        tz = pool.rules.timezone
        today = local_day(now, tz)
        start = datetime.combine(today, time(0), tz).timestamp()
        self._memo[pool.name] = (start, next_midnight(now, tz), today)
        return today


def number_row(st: NumberState, pool: PoolConfig, now: float) -> dict[str, object]:
    """A number as `trustline numbers` and the API list it, in the pool it serves now."""
    today = local_day(now, pool.rules.timezone)
    cap = st.cap_on(today, pool.rules.warmup_days)
    if not st.active:
        state = "inactive"
    elif st.quarantined(now):
        state = "quarantined"
    elif st.resting(now):
        state = "resting"
    elif st.used_on(today) >= cap:
        state = "capped"
    else:
        state = "active"
    if st.serving_pool:
        state += f" (reserve from {st.home_pool})"
    return {
        "pool": pool.name,
        "number": st.number,
        "name": st.name,
        "used": st.used_on(today),
        "cap": cap,
        "state": state,
    }


def build_states(
    config: Config,
    rows: dict[str, NumberRow],
    usage: dict[tuple[str, str], int],
    rests: dict[str, list[tuple[float, float]]],
    quarantined: dict[str, float],
    days: PoolDays,
    now: float,
) -> tuple[dict[str, NumberState], list[tuple[str, str]]]:
    """Every configured number's state from what the store holds: ({number: state},
    [(number, presence key)] computed here because the store had none yet)."""
    states: dict[str, NumberState] = {}
    computed: list[tuple[str, str]] = []
    for cfg in config.numbers.values():
        row = rows.get(cfg.number)
        serving = row.serving_pool if row and row.serving_pool in config.pools else None
        if row is not None and row.presence is not None:
            presence = row.presence or None
        else:  # parsing is the costly part of a start: once per number, then stored
            presence = number_area(cfg.number)
            computed.append((cfg.number, presence or ""))
        st = NumberState(
            number=cfg.number,
            home_pool=cfg.pool,
            name=cfg.name,
            full_cap=cfg.daily_cap,
            presence=presence,
            active=cfg.active,
            last_used_at=(row.last_used_at or 0.0) if row else 0.0,
            rest_windows=rests.get(cfg.number, []),
            quarantined_until=quarantined.get(cfg.number),
            serving_pool=serving,
        )
        pool = config.pools[serving or cfg.pool]
        st.day = days.today(pool, now)
        st.used = usage.get((cfg.number, st.day.isoformat()), 0)
        if serving and row and row.promoted_at:
            st.promoted_day = local_day(row.promoted_at, pool.rules.timezone)
        states[cfg.number] = st
    return states, computed
