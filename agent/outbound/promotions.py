"""Reserve promotions: a pool that fell below min_active gets healthy reserve numbers, which go
back to the reserve once the pool's own numbers are enough again.

May: plan moves from the number view (agent.outbound.policy.plan_promotions, pure), have the
store decide them (OutboundRepo.move_reserves: applied only from the shared state the plan was
made from), then put them into the view and raise an alert for each promotion. When another
process changed the shared state first, read the view again and re-plan from it: two agents
never both promote one reserve number, nor one each for the same shortfall, and both end with
the same serving pools. Must not: write SQL of its own or decide anything about a call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from agent import phone
from agent.clock import Clock
from agent.outbound.policy import local_day, plan_promotions
from agent.outbound.repo import OutboundRepo
from agent.outbound.view import NumberView

log = logging.getLogger(__name__)

# Re-plans after another process moved first, before leaving it to the next event.
_TRIES = 3

Alert = Callable[[float, str, str | None, str], Awaitable[None]]  # (now, kind, pool, message)


class Promotions:
    def __init__(
        self,
        view: NumberView,
        repo: OutboundRepo,
        clock: Clock,
        alert: Alert,
        load_view: Callable[[], Awaitable[None]],
    ) -> None:
        self._view = view
        self._repo = repo
        self._clock = clock
        self._alert = alert
        self._load_view = load_view  # reads the view again from the store
        self.enabled = True  # False for a read-only service (listings): nothing is moved

    async def reconcile(self) -> None:
        """Roll the view's days, then re-plan the pools whose health changed and have the
        store decide the moves; after another process moved first, follow the store."""
        view = self._view
        for _ in range(_TRIES):
            now = self._clock.now()
            view.roll_days(now)
            if not self.enabled or not view.dirty_pools:
                return
            dirty, view.dirty_pools = view.dirty_pools, set()
            moves = self._plan(dirty, now)
            if not moves:
                return
            seen = view.version
            planned = [(n, view.states[n].serving_pool, target) for n, target in moves]
            try:
                applied = await self._repo.move_reserves(planned, now, seen)
            except BaseException:
                view.dirty_pools |= dirty  # not decided: planned again on the next event
                raise
            if applied:
                if view.version == seen:
                    view.version = seen + 1  # our own moves: nothing new to read
                await self._moved(moves, now)
                return
            log.info("outbound: the reserves changed in the store meanwhile; following it")
            await self._load_view()  # every pool is planned again from it

    def _plan(self, dirty: set[str], now: float) -> list[tuple[str, str | None]]:
        config = self._view.config
        if not any(p.reserve for p in config.pools.values()) and not any(
            st.serving_pool for st in self._view.states.values()
        ):
            return []  # no reserve and nothing promoted: nothing can move
        if any(config.pools[name].reserve for name in dirty if name in config.pools):
            dirty = set(config.pools)  # reserve numbers came back: every pool may want one
        pools = {
            name: (p.reserve, p.rules.min_active)
            for name, p in config.pools.items()
            if name in dirty or p.reserve
        }
        return plan_promotions(pools, self._view.members(pools), now)

    async def _moved(self, moves: list[tuple[str, str | None]], now: float) -> None:
        """Reserve moves the store took: into the view, with an alert for each promotion."""
        view = self._view
        for number, target in moves:
            st = view.states.get(number)
            if st is None:
                continue
            st.serving_pool = target
            if target is not None:
                st.promoted_day = local_day(now, view.config.pools[target].rules.timezone)
                message = (
                    f"reserve number {phone.mask(number)} promoted into pool {target}:"
                    " too few usable numbers"
                )
                await self._alert(now, "reserve_promoted", target, message)
            else:
                st.promoted_day = None
                log.info("outbound: reserve number %s returns to the reserve", phone.mask(number))
            view.place(st, now)
