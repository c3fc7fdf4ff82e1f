"""Leases ahead of a large pool's calls: the numbers its next calls will get, one unit each.

A lease serves a number that comes back within a lease's idle time (claims.py). In a pool of
thousands of numbers, least-used rotation hands each number out once before any comes back,
so every call would wait for a store round trip of its own. When a pool's calls go to numbers
not in use (``cold`` calls) at least ``LEASE_AHEAD`` times within a lease's idle time, the
next ``LEASE_AHEAD`` numbers of its rotation (``Selector.peek``) get one unit each, asked in
the batch of the call that saw it, so the calls that follow take their number from a lease.
Units not used in time go back as any idle lease does. Slower traffic gets none: they would
mostly go back unused, a store write each for nothing.

May: read the number view and choose numbers. Must not: talk to the store, take a number
from the selector, or hold units itself (Claims asks for them and holds them).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from agent.config import PoolConfig
from agent.outbound.policy import LEASE_AHEAD, LEASE_IDLE_SECONDS, NumberState
from agent.outbound.view import NumberView


class LeaseAhead:
    """Per pool: how many cold calls came in this idle window, and the numbers leased ahead."""

    def __init__(self, view: NumberView) -> None:
        self._view = view
        self._cold: dict[str, tuple[float, int]] = {}  # pool -> (window start, cold calls)
        self._ahead: dict[str, set[str]] = {}  # pool -> numbers asked or holding a unit ahead

    def wanted(
        self, pool: PoolConfig, day: date, now: float, asked: Callable[[str], bool]
    ) -> list[tuple[NumberState, int]]:
        """A cold call in ``pool``: the numbers (with their cap) to lease a unit ahead on now,
        if any. ``asked(number)``: a unit is on its way to that number already."""
        start, count = self._cold.get(pool.name, (now, 0))
        if now - start >= LEASE_IDLE_SECONDS:
            start, count = now, 0
        self._cold[pool.name] = (start, count + 1)
        if count + 1 < LEASE_AHEAD:
            return []
        states = self._view.states
        ahead = {
            number
            for number in self._ahead.get(pool.name, ())
            if asked(number) or ((st := states.get(number)) is not None and st.held)
        }
        self._ahead[pool.name] = ahead
        if len(ahead) >= LEASE_AHEAD // 2:
            return []  # most of the last ones are still ahead of the calls
        out: list[tuple[NumberState, int]] = []
        for number in self._view.selector.peek(pool.name, LEASE_AHEAD):
            st = states.get(number)
            if st is None or number in ahead or asked(number) or st.held or st.reserved:
                continue
            cap = st.cap_on(day, pool.rules.warmup_days)
            if st.day != day or st.lease_target(cap) < 1:
                continue  # not rolled to today yet, or too near its cap to hold a unit
            ahead.add(number)
            out.append((st, cap))
        return out
