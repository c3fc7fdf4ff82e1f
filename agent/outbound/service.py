"""Outbound use cases: pick a caller ID for a call, take spam reports, reinstate numbers.

The facade the routes, the admin API and the CLI call; each job lives in its own module:
the number view (view.py, pure, beside the policy in policy.py), deciding a call (decide.py),
cap units from leases and batched claims (claims.py), reports, quarantines and rests
(reports.py), reserve promotions (promotions.py), the audit's write-behind (audit.py). This
module builds them, runs their life cycle and keeps the view in step with the store, which
stays the source of truth: the cap is enforced by the store's atomic claim, and changes made
by other processes (CLI, another agent) are picked up through the store's state version.

Leases go back to the store when idle for LEASE_IDLE_SECONDS, at the pool's midnight and at
stop. Health (promotions) is re-planned only for pools where an event (rest or quarantine
starting or ending, a new day, a report, a reload) changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator
from datetime import date, timedelta

from agent.clock import Clock
from agent.config import Config
from agent.contact.presence import number_area
from agent.outbound.audit import AuditWriter
from agent.outbound.claims import Claims
from agent.outbound.decide import Decider, Decision, DecisionHooks, PinnedNumber, PinSource
from agent.outbound.policy import LEASE_IDLE_SECONDS, local_day
from agent.outbound.promotions import Promotions
from agent.outbound.repo import OutboundRepo
from agent.outbound.reports import (
    REPORT_IN_POOL,
    REPORT_INVALID,
    REPORT_QUARANTINED,
    REPORT_UNKNOWN,
    ReportResult,
    Reports,
)
from agent.outbound.view import NumberView, PoolDays, build_states
from agent.store import Database
from agent.tasks import stop_task

__all__ = [
    "REPORT_INVALID",
    "REPORT_IN_POOL",
    "REPORT_QUARANTINED",
    "REPORT_UNKNOWN",
    "Decision",
    "DecisionHooks",
    "OutboundService",
    "PinSource",
    "PinnedNumber",
    "ReportResult",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Building a view makes a few objects per number, none in a cycle: without a pause the
    cycle collector would walk every object already alive several times over (at 100,000
    numbers, about a third of the build). Synchronous code only: no other task runs meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class OutboundService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        config: Config,
        hash_key: bytes,
        hooks: DecisionHooks | None = None,
    ) -> None:
        self._repo = OutboundRepo(db)
        self._reads = OutboundRepo(db.reads)  # background reads: never queued behind claims
        self._clock = clock
        self.hooks = hooks or DecisionHooks()
        self._audit = AuditWriter(self._repo)
        self._view = NumberView(config, self._lease_dropped)
        self._lock = asyncio.Lock()  # serialises state rebuilds, not decisions
        self._promotions = Promotions(self._view, self._repo, clock, self._alert, self._load_view)
        self._reports = Reports(
            self._view,
            self._repo,
            self._reads,
            clock,
            hash_key,
            self._promotions,
            self._alert,
            self.reload_state,
        )
        self._claims = Claims(self._view, self._repo, clock, self._reports.handed)
        self._decider = Decider(self._view, self._claims, self._audit, self.hooks, clock, hash_key)
        self._watch_task: asyncio.Task[None] | None = None
        self._read_only = False

    @property
    def config(self) -> Config:
        return self._view.config

    @property
    def pins(self) -> PinSource | None:
        """Numbers announced to callees (agent.contact), set by app.py when contact runs."""
        return self._decider.pins

    @pins.setter
    def pins(self, source: PinSource | None) -> None:
        self._decider.pins = source

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, *, watch_interval: float | None = 1.0, write: bool = True) -> None:
        """Load the view from the store; ``write=False`` for read-only listings (no config sync,
        no promotions)."""
        self._read_only = not write
        self._promotions.enabled = write
        if write:
            await self._repo.sync_numbers(self._number_rows(self.config), number_area)
        await self.reload_state()
        self._audit.start()
        if watch_interval:
            self._watch_task = asyncio.create_task(
                self._watch(watch_interval), name="outbound-watch"
            )

    async def stop(self) -> None:
        # The watch first (it refills and gives back too), then every claim still in flight,
        # then the leases: nothing granted after this point stays counted for nobody.
        await stop_task(self._watch_task)
        self._watch_task = None
        await self._reports.settle()
        await self._claims.drain()
        try:
            await self.return_leases()
        except Exception:  # the units stay counted (caps safe); the audit must still be written
            log.exception("outbound: could not give back the units held here")
        await self._audit.stop()

    async def apply_config(self, config: Config) -> None:
        """Swap in a new config whole and rebuild the number view from the store."""
        await self._repo.sync_numbers(self._number_rows(config), number_area)
        await self.reload_state(config)

    async def flush(self) -> None:
        """Write what is queued (audit rows, rests being decided) to the store now."""
        await self._reports.settle()
        await self._audit.flush()

    async def return_leases(self) -> None:
        """Uncount every unit held here and not handed out (at stop; before reading counts)."""
        await self._claims.return_leases()

    async def _watch(self, interval: float) -> None:
        """Pick up changes other processes made (CLI reports, reinstatements) and timed ones."""
        while True:
            await asyncio.sleep(interval)
            try:
                self._claims.release_idle(LEASE_IDLE_SECONDS)
                await self._claims.give_back_now()
                if await self._reads.state_version() != self._view.version:
                    await self.reload_state()
                else:
                    await self._promotions.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbound: could not refresh state from the store; will retry")

    @staticmethod
    def _number_rows(config: Config) -> list[tuple[str, str, bool]]:
        return [(number, pool, active) for number, pool, _, _, active in config.numbers.rows()]

    # -- the view and the store ------------------------------------------------------------
    async def reload_state(self, config: Config | None = None) -> None:
        """Rebuild the view from the store, for ``config`` (default: the current one), then
        re-plan promotions.

        Everything is read first and swapped at the end, so a store failure midway leaves the
        running config and view as they were.
        """
        await self._load_view(config or self.config)
        await self._promotions.reconcile()

    async def _load_view(self, config: Config | None = None) -> None:
        """Read numbers, counts, rests and quarantines from the store into a new view."""
        config = config or self.config
        async with self._lock:
            now = self._clock.now()
            version = await self._reads.state_version()
            rows = await self._reads.view_rows()
            oldest = min(local_day(now, p.rules.timezone) for p in config.pools.values())
            since = (oldest - timedelta(days=1)).isoformat()
            usage = {(n, d): u for n, d, u in await self._reads.usage_since(since)}
            rests: dict[str, tuple[tuple[float, float], ...]] = {}
            for number, start, end in await self._reads.rests_after(now):
                rests[number] = (*rests.get(number, ()), (start, end))
            quarantined = dict(await self._reads.quarantines_after(now))
            days = PoolDays()  # a pool's time zone may have changed
            with _no_cycle_collection():
                states, computed = build_states(config, rows, usage, rests, quarantined, days, now)
                # 100,000 rows freed before the selector is filled: it reuses their memory
                # rather than leave it in holes between what stays (idle RSS).
                del rows, usage, rests, quarantined
                self._view.swap(config, states, days, version, now)
        if computed and not self._read_only:
            await self._repo.set_presences(computed)

    def _lease_dropped(self, number: str, day: date | None, units: int) -> None:
        self._claims.drop_lease(number, day, units)  # the view is built before the claims

    async def _alert(self, now: float, kind: str, pool: str | None, message: str) -> None:
        log.warning("alert %s: %s", kind, message)
        await self._repo.add_alert(now, kind, pool, message)
        for hook in self.hooks.on_alert:
            hook(kind, pool, message)

    # -- deciding --------------------------------------------------------------------------
    async def decide(
        self,
        purpose: str,
        callee: str,
        uniqueid: str = "",
        case_ref: str | None = None,
        area: str | None = None,
    ) -> Decision:
        return await self._decider.decide(purpose, callee, uniqueid, case_ref, area)

    async def reserve(self, purpose: str, callee: str, area: str | None = None) -> Decision:
        """The number a call announced now will present (agent.contact's announce): chosen and
        counted now as that call's, without an audit row; the call then presents it through
        ``pins`` without counting it again."""
        return await self._decider.decide(purpose, callee, "", None, area, audited=False)

    def give_back(self, number: str, day: str) -> None:
        """Uncount a unit reserved for an announced call that will not present it."""
        self._claims.give_back(number, day)

    def fallback_decision(self, purpose: str, reason: str) -> Decision:
        """The answer when the agent cannot decide in time: the pool's fallback. No I/O."""
        return self._decider.fallback_decision(purpose, reason)

    def callee_hash(self, callee: str) -> str | None:
        return self._decider.callee_hash(callee)

    def record_failure(
        self, uniqueid: str, purpose: str, decision: Decision, callee: str, case_ref: str | None
    ) -> None:
        """Audit an answer the route gave without a decision (deadline, error)."""
        self._decider.record_failure(uniqueid, purpose, decision, callee, case_ref)

    # -- reports and admin -----------------------------------------------------------------
    def resolve_number(self, text: str) -> str:
        return self._reports.resolve_number(text)

    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> ReportResult:
        """A spam report against one of our caller IDs; quarantines at the pool's threshold.

        ``event_id`` (the AMI UserEvent's Uniqueid) makes a report that several agents
        receive count once."""
        return await self._reports.report_spam(number_text, source, event_id=event_id)

    async def sideline(self, number: str, pool_name: str, policy: str) -> None:
        """Act on a drift or reputation signal: see Reports.sideline."""
        await self._reports.sideline(number, pool_name, policy)

    async def reinstate(self, number_text: str) -> bool:
        return await self._reports.reinstate(number_text)

    def fallbacks(self) -> dict[str, str]:
        """purpose -> the caller ID the dialplan keeps in AstDB for when the agent is down."""
        return self._decider.fallback.per_purpose(self.config, self._clock.now())

    def usable_by_pool(self) -> dict[str, int]:
        """Numbers that can be handed out right now, per pool (for metrics and readiness)."""
        return self._view.usable_by_pool()

    def number_rows(self) -> list[dict[str, object]]:
        """One row per number for `trustline numbers` and the API."""
        return self._view.rows(self._clock.now())
