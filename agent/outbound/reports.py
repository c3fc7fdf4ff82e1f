"""Reports and sidelining: spam reports, quarantines, rests, reinstatements.

May: record spam reports (a stranger's number as a keyed hash), quarantine a number at its
pool's threshold, rest a number after intensive days or on a drift/reputation signal,
reinstate it on an admin's word, and tell other agents through the store's state version.
Must not: write SQL of its own (OutboundRepo does) or log a full number (phone.mask).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from agent import phone
from agent.clock import Clock
from agent.config import PoolConfig
from agent.errors import BadRequest, UnknownNumber
from agent.outbound.policy import NumberState, intensive_rest, local_day, quarantine_due
from agent.outbound.promotions import Alert, Promotions
from agent.outbound.repo import OutboundRepo
from agent.outbound.view import NumberView

log = logging.getLogger(__name__)

# The state of a reported number after its report (ReportResult.state).
REPORT_QUARANTINED = "quarantined"  # out of its pool (by this report or an earlier one)
REPORT_IN_POOL = "in_pool"  # one of ours, still handed out from its pool
REPORT_UNKNOWN = "unknown"  # a valid number that is not one of ours: recorded as a keyed hash
REPORT_INVALID = "invalid"  # not a phone number: nothing recorded


@dataclass(frozen=True, slots=True)
class ReportResult:
    number: str  # E.164 of ours; masked when not ours or unparseable (never a stranger's number)
    ours: bool
    reports_today: int
    quarantined: bool  # this report quarantined the number
    duplicate: bool = False  # the same AMI event was already recorded (another agent)
    state: str = REPORT_UNKNOWN  # the number's real state now: one of REPORT_*


class Reports:
    def __init__(
        self,
        view: NumberView,
        repo: OutboundRepo,
        reads: OutboundRepo,
        clock: Clock,
        hash_key: bytes,
        promotions: Promotions,
        alert: Alert,
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self._view = view
        self._repo = repo
        self._reads = reads  # background reads: never queued behind claims
        self._clock = clock
        self._hash_key = hash_key
        self._promotions = promotions
        self._alert = alert
        self._reload = reload  # the whole view again from the store, promotions re-planned
        self._background: set[asyncio.Task[None]] = set()

    async def settle(self) -> None:
        """Wait for the rests being decided in the background."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def resolve_number(self, text: str) -> str:
        try:
            return phone.to_e164(text, self._view.config.default_region, require_valid=False)
        except phone.InvalidNumber as exc:
            raise BadRequest(f"not a phone number: {exc}") from None

    # -- spam reports ----------------------------------------------------------------------
    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> ReportResult:
        """A spam report against one of our caller IDs; quarantines at the pool's threshold.

        ``event_id`` (the AMI UserEvent's Uniqueid) makes a report that several agents
        receive count once."""
        now = self._clock.now()
        try:
            number = self.resolve_number(number_text)
        except BadRequest:
            log.info(
                "spam report from %s for an unparseable number %s: ignored",
                source,
                phone.mask(number_text),
            )
            return ReportResult(phone.mask(number_text), False, 0, False, state=REPORT_INVALID)
        if number not in self._view.config.numbers:
            return await self._report_stranger(number, source, event_id, now)
        return await self._report_ours(number, source, event_id, now)

    async def _report_stranger(
        self, number: str, source: str, event_id: str | None, now: float
    ) -> ReportResult:
        config = self._view.config
        day = local_day(now, config.pools[next(iter(config.pools))].rules.timezone)
        # A stranger's number (often a patient's) is stored as a keyed hash, like callees.
        await self._repo.add_report(
            phone.keyed_hash(self._hash_key, number),
            now,
            day.isoformat(),
            source,
            ours=False,
            event_id=event_id,
        )
        log.info(
            "spam report from %s for %s: not one of ours, recorded and ignored",
            source,
            phone.mask(number),
        )
        return ReportResult(phone.mask(number), False, 0, False, state=REPORT_UNKNOWN)

    async def _report_ours(
        self, number: str, source: str, event_id: str | None, now: float
    ) -> ReportResult:
        st = self._view.states.get(number)
        pool = self._view.pool_of(st) if st else self._view.config.pools[self._home(number)]
        rules = pool.rules
        count, added = await self._repo.add_report(
            number,
            now,
            local_day(now, rules.timezone).isoformat(),
            source,
            ours=True,
            event_id=event_id,
        )
        if not added:
            log.info("spam report from %s for %s: already recorded", source, phone.mask(number))
            state = self.report_state(number, now)
            return ReportResult(number, True, count, False, duplicate=True, state=state)
        quarantined = False
        if quarantine_due(count, rules) and not (st and st.quarantined(now)):
            until = now + rules.quarantine_days * 86400.0
            await self._repo.quarantine(number, now, until, f"{count} spam reports in a day")
            quarantined = True
            await self._alert(
                now,
                "number_quarantined",
                pool.name,
                f"{phone.mask(number)} quarantined after {count} spam reports today",
            )
            if st is not None:
                st.quarantined_until = until
                self._view.place(st, now)
            self._view.dirty_pools.add(pool.name)
            await self._promotions.reconcile()
        await self._repo.bump_state_version()
        log.info("spam report from %s for %s (%d today)", source, phone.mask(number), count)
        return ReportResult(number, True, count, quarantined, state=self.report_state(number, now))

    def _home(self, number: str) -> str:
        return self._view.config.numbers[number].pool

    def report_state(self, number: str, now: float) -> str:
        st = self._view.states.get(number)
        return REPORT_QUARANTINED if st is not None and st.quarantined(now) else REPORT_IN_POOL

    # -- sidelining and reinstating --------------------------------------------------------
    async def sideline(self, number: str, pool_name: str, policy: str) -> None:
        """Act on a drift or reputation signal (the pool's ``on_drift``/``on_flag``): "rest"
        rests the number for the pool's rest_hours from now, "quarantine" quarantines it for
        quarantine_days; "alert" (or anything else) changes nothing here. A number that is
        not ours, or already out of its pool, is left as it is."""
        st = self._view.states.get(number)
        if policy not in ("rest", "quarantine") or st is None:
            return
        now = self._clock.now()
        pool = self._view.pool_of(st)
        if policy == "quarantine" and not st.quarantined(now):
            until = now + pool.rules.quarantine_days * 86400.0
            await self._repo.quarantine(number, now, until, f"{policy} on a reputation signal")
            kind, message = "number_quarantined", f"{phone.mask(number)} quarantined: drift or flag"
        elif policy == "rest" and not st.resting(now):
            until = now + pool.rules.rest_hours * 3600.0
            await self._repo.add_rest(number, now, until, "reputation signal")
            kind, message = "number_rested", f"{phone.mask(number)} rested: drift or flag"
        else:
            return
        await self._repo.bump_state_version()
        await self._reload()
        await self._alert(now, kind, pool_name, message)

    async def reinstate(self, number_text: str) -> bool:
        number = self.resolve_number(number_text)
        if number not in self._view.config.numbers:
            raise UnknownNumber(f"{phone.mask(number)} is not in any pool")
        now = self._clock.now()
        changed = await self._repo.reinstate(number, now)
        await self._repo.bump_state_version()
        await self._reload()
        log.info("outbound: %s reinstated by an admin", phone.mask(number))
        return changed

    # -- rests after intensive days --------------------------------------------------------
    def handed(self, st: NumberState, pool: PoolConfig, ordinal: int, now: float) -> None:
        """A call got this number as the ``ordinal``-th of its day: past the pool's intensive
        threshold, decide in the background whether it rests (the call is not kept waiting)."""
        # Units come in grants shared with other agents, so "reached" rather than "equal":
        # once a day per agent; the store keeps one rest per window whoever decides it.
        if ordinal >= pool.rules.intensive_threshold and st.rest_checked != st.day:
            st.rest_checked = st.day
            task = asyncio.get_running_loop().create_task(self._rest_safely(st.number, pool, now))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _rest_safely(self, number: str, pool: PoolConfig, now: float) -> None:
        try:
            await self._maybe_rest(number, pool, now)
        except Exception:  # the call was answered already; the admin sees the missed rest here
            log.exception("outbound: could not record the rest of %s", phone.mask(number))

    async def _maybe_rest(self, number: str, pool: PoolConfig, now: float) -> None:
        """Today just reached the intensive threshold: rest if the days before did too."""
        rules = pool.rules
        today = local_day(now, rules.timezone)
        days = [
            (today - timedelta(days=i)).isoformat()
            for i in range(1, rules.intensive_days_before_rest)
        ]
        history = await self._reads.usage_for(number, days)
        previous = [history.get(d, 0) for d in days]
        window = intensive_rest(rules.intensive_threshold, previous, rules, now)
        if window is None:
            return
        await self._repo.add_rest(number, window[0], window[1], "intensive_days")
        await self._repo.bump_state_version()  # other agents on this store take the rest too
        st = self._view.states.get(number)
        if st is not None:
            st.rest_windows += (window,)
            self._view.look_at(number, window[0])
        log.info(
            "outbound: %s rests %.0f h from next midnight after %d intensive days",
            phone.mask(number),
            rules.rest_hours,
            rules.intensive_days_before_rest,
        )
