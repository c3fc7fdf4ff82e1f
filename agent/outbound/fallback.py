"""Which caller ID a call gets when no number of its pool can be claimed: fallback health.

A pool's fallback number is presented without a claim (it is the safe answer when the store is
slow or the pool is exhausted), so nothing else would stop a quarantined or resting number from
going out all day. Here it is used only while healthy: active, not resting, not quarantined and
under a hard ceiling of fallback uses today (the number's own daily cap, counted apart from its
claims: the fallback is usually one of the exhausted pool's numbers, so it never carries more
than twice its cap in a day). Otherwise a healthy
reserve number takes over, and when there is none the agent hands out no number at all: the
dialplan keeps the caller ID it preset (AstDB, then the global TRUSTLINE_FALLBACK_CID).

Uses are counted per number and per local day, in memory (each agent counts its own hand-outs:
the ceiling is a guard against a pattern, not an exact cap). A pool whose fallback goes out
``PATTERN_USES`` times within an hour is a pattern worth an alert. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date

from agent.config import Config, NumberConfig, PoolConfig
from agent.outbound.policy import NumberState, local_day

PATTERN_USES = 20  # fallback hand-outs in one pool within PATTERN_SECONDS: alert
PATTERN_SECONDS = 3600.0


class FallbackGuard:
    def __init__(self, state_of: Callable[[str], NumberState | None]) -> None:
        self._state_of = state_of
        self._uses: dict[str, tuple[date, int]] = {}  # number -> (local day, uses that day)
        self._recent: dict[str, list[float]] = {}  # pool -> times of recent hand-outs

    def healthy(self, number: str, pool: PoolConfig, now: float) -> bool:
        st = self._state_of(number)
        if st is None:
            return True  # a declared own number (switchboard): nothing of ours to judge it by
        if not st.active or st.resting(now) or st.quarantined(now):
            return False
        day, uses = self._uses.get(number, (None, 0))
        return day != local_day(now, pool.rules.timezone) or uses < st.full_cap

    def choose(
        self, pool: PoolConfig, reserves: Iterable[PoolConfig], now: float
    ) -> tuple[str, str] | None:
        """(number, caller name) to present, or None: the dialplan's own fallback."""
        if self.healthy(pool.fallback, pool, now):
            return pool.fallback, pool.fallback_name
        for reserve in reserves:
            entry: NumberConfig
            for entry in reserve.numbers:
                if entry.active and self.healthy(entry.number, reserve, now):
                    return entry.number, entry.name
        return None

    def per_purpose(self, config: Config, now: float) -> dict[str, str]:
        """purpose -> the same healthy choice as a fallback answer, for the AstDB copy; a
        purpose with none is left out (its key is deleted: the dialplan's global applies)."""
        out: dict[str, str] = {}
        for purpose, pool_name in config.purposes.items():
            chosen = self.choose(config.pools[pool_name], config.reserve_pools, now)
            if chosen is not None:
                out[purpose] = chosen[0]
        return out

    def count(self, pool: PoolConfig, number: str, now: float) -> bool:
        """Count one hand-out; True when the pool's fallback use just became a pattern."""
        today = local_day(now, pool.rules.timezone)
        day, uses = self._uses.get(number, (today, 0))
        self._uses[number] = (today, uses + 1 if day == today else 1)
        recent = [t for t in self._recent.get(pool.name, ()) if t > now - PATTERN_SECONDS]
        recent.append(now)
        self._recent[pool.name] = recent
        return len(recent) == PATTERN_USES
