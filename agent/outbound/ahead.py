"""Leases ahead of a large pool's calls: the numbers its next calls will get, one unit each.

A lease serves a number that comes back within a lease's idle time (claims.py). In a pool of
thousands of numbers, least-used rotation hands each number out once before any comes back,
so every call would wait for a store round trip of its own. When a pool's calls go to numbers
not in use (``cold`` calls) at least ``LEASE_AHEAD`` times within a lease's idle time, the
next numbers of its rotation (``Selector.peek``; about a quarter of a second of its calls)
get one unit each, asked in the batch of the call that saw it, so the calls that follow take
their number from a lease.
Units not used in time go back as any idle lease does. Slower traffic gets none: they would
mostly go back unused, a store write each for nothing.

May: read the number view and choose numbers. Must not: talk to the store, take a number
from the selector, or hold units itself (Claims asks for them and holds them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from agent.config import PoolConfig
from agent.outbound.policy import LEASE_AHEAD, LEASE_AHEAD_MAX, LEASE_IDLE_SECONDS, NumberState
from agent.outbound.view import NumberView


class LeaseAhead:
    """Per pool: how many cold calls came in this idle window, and the numbers leased ahead."""

    def __init__(self, view: NumberView) -> None:
        self._view = view
        # pool -> (window start, cold calls in this window, cold calls in the one before)
        self._cold: dict[str, tuple[float, int, int]] = {}
        self._ahead: dict[str, set[str]] = {}  # pool -> numbers asked or holding a unit ahead

    def wanted(
        self, pool: PoolConfig, day: date, now: float, asked: Callable[[str], bool]
    ) -> list[tuple[NumberState, int]]:
        """A cold call in ``pool``: the numbers (with their cap) to lease a unit ahead on now,
        if any. ``asked(number)``: a unit is on its way to that number already.

        The numbers ahead cover about a quarter of a second of the pool's cold calls (at
        least LEASE_AHEAD, at most LEASE_AHEAD_MAX), and are topped up once half are used."""
        start, count, before = self._cold.get(pool.name, (now, 0, 0))
        if now - start >= LEASE_IDLE_SECONDS:
            before = count if now - start < 2 * LEASE_IDLE_SECONDS else 0
            start, count = now, 0
        count += 1
        self._cold[pool.name] = (start, count, before)
        rate = max(count, before)
        if rate < LEASE_AHEAD:
            return []
        window = min(LEASE_AHEAD_MAX, max(LEASE_AHEAD, rate // 4))
        ahead = self._ahead.setdefault(pool.name, set())
        if len(ahead) >= window // 2:
            if count % 16:
                return []  # most of the last ones are still ahead of the calls (looked at below)
            ahead = self._still_ahead(ahead, asked)
            self._ahead[pool.name] = ahead
            if len(ahead) >= window // 2:
                return []
        else:
            ahead = self._ahead[pool.name] = self._still_ahead(ahead, asked)
        return self._next(pool, day, window, ahead, asked)

    def _still_ahead(self, ahead: set[str], asked: Callable[[str], bool]) -> set[str]:
        """The numbers of ``ahead`` with a unit still on its way or held (not used yet)."""
        states = self._view.states
        return {
            number
            for number in ahead
            if asked(number) or ((st := states.get(number)) is not None and st.held)
        }

    def _next(
        self,
        pool: PoolConfig,
        day: date,
        window: int,
        ahead: set[str],
        asked: Callable[[str], bool],
    ) -> list[tuple[NumberState, int]]:
        """The rotation's next ``window`` numbers not ahead yet, each with its cap."""
        states = self._view.states
        out: list[tuple[NumberState, int]] = []
        for number in self._view.selector.peek(pool.name, window):
            st = states.get(number)
            if st is None or number in ahead or asked(number) or st.held or st.reserved:
                continue
            cap = st.cap_on(day, pool.rules.warmup_days)
            if st.day != day or st.lease_target(cap) < 1:
                continue  # not rolled to today yet, or too near its cap to hold a unit
            ahead.add(number)
            out.append((st, cap))
        return out
