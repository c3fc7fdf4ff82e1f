"""Deciding a call: which caller ID it presents, from its purpose's pool.

May: read the callee (presence key, keyed hash), present a number announced to this callee
(``pins``), else take the best candidate through ``Claims``, else borrow a reserve number,
refuse or fall back as the pool says; queue the call's audit row; tell the decision hooks.
Must not: wait on the store except through a claim, or log a full number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from agent import contract, phone
from agent.clock import Clock
from agent.config import PoolConfig
from agent.contact.presence import area_hint, callee_area
from agent.errors import BadRequest
from agent.outbound.audit import AuditWriter, CallContext
from agent.outbound.claims import Claims
from agent.outbound.fallback import PATTERN_USES, FallbackGuard
from agent.outbound.policy import NumberState, presence_wanted
from agent.outbound.repo import AuditRecord
from agent.outbound.view import NumberView


class Decision(NamedTuple):  # one or two per call: a tuple is made in a third of the time
    status: str
    reason: str
    pool: str | None = None
    number: str | None = None  # E.164 caller ID to present; None = leave the dialplan's
    name: str | None = None  # caller name (CNAM)


class PinnedNumber(Protocol):
    """A caller ID announced to a callee (agent.contact), counted when it was announced."""

    @property
    def number(self) -> str: ...
    @property
    def reserved_day(self) -> str: ...  # the pool's local day its unit was counted for


class PinSource(Protocol):
    """Pins, asked on the call's path: in memory, no I/O (writes go in the background)."""

    def pinned(self, purpose: str, callee_hash: str, now: float) -> PinnedNumber | None: ...
    def used(self, pin: PinnedNumber, now: float) -> None: ...
    def dropped(self, pin: PinnedNumber, reason: str, now: float) -> None: ...


@dataclass(slots=True)
class DecisionHooks:
    """Observers of decisions (metrics); called synchronously, must not block."""

    on_decision: list[Callable[[Decision], None]] = field(default_factory=list)
    on_alert: list[Callable[[str, str | None, str], None]] = field(default_factory=list)


class Decider:
    def __init__(
        self,
        view: NumberView,
        claims: Claims,
        audit: AuditWriter,
        hooks: DecisionHooks,
        clock: Clock,
        hash_key: bytes,
    ) -> None:
        self._view = view
        self._claims = claims
        self._audit = audit
        self._hooks = hooks
        self._clock = clock
        self._hash_key = hash_key
        self.fallback = FallbackGuard(lambda number: view.states.get(number))
        self.pins: PinSource | None = None  # set by app.py when patient contact runs

    @functools.lru_cache(maxsize=4096)  # noqa: B019  (bounded; lives as long as the service)
    def _callee(self, callee: str, region: str) -> tuple[str | None, str | None]:
        """Presence key and keyed hash of a callee: parsing numbers is the costliest step of a
        decision, and patients are called again (reminder, then confirmation)."""
        try:
            area, e164 = callee_area(callee, region)
        except phone.InvalidNumber:
            return None, None  # an internal extension or junk: no local presence, still served
        return area, phone.keyed_hash(self._hash_key, e164)

    def callee_hash(self, callee: str) -> str | None:
        try:
            e164 = phone.to_e164(callee, self._view.config.default_region, require_valid=False)
        except phone.InvalidNumber:
            return None
        return phone.keyed_hash(self._hash_key, e164)

    def fallback_decision(self, purpose: str, reason: str) -> Decision:
        """The answer when the agent cannot decide in time: the pool's fallback. No I/O."""
        pool = self._view.config.pool_for(purpose)
        if pool is None:
            return Decision(contract.STATUS_ERROR, "unknown_purpose")
        return self._fallback_answer(pool, contract.STATUS_FALLBACK, reason, self._clock.now())

    def _fallback_answer(self, pool: PoolConfig, status: str, reason: str, now: float) -> Decision:
        """The pool's fallback while it is healthy, else a healthy reserve number, else no
        number (the dialplan keeps its own fallback); see agent/outbound/fallback.py."""
        chosen = self.fallback.choose(pool, self._view.config.reserve_pools, now)
        if chosen is None:
            return Decision(status, reason, pool.name)
        number, name = chosen
        if self.fallback.count(pool, number, now):
            message = f"pool {pool.name}: fallback caller ID used {PATTERN_USES} times in an hour"
            for hook in self._hooks.on_alert:
                hook("fallback_used", pool.name, message)
        return Decision(status, reason, pool.name, number, name)

    async def decide(
        self,
        purpose: str,
        callee: str,
        uniqueid: str = "",
        case_ref: str | None = None,
        area: str | None = None,
        *,
        audited: bool = True,
    ) -> Decision:
        """Decide a call; ``audited=False`` for a number reserved for an announced call (no
        audit row, no hooks: the call itself is decided later)."""
        decision = await self._decide(purpose, callee, uniqueid, case_ref, area, audited)
        if audited:
            for hook in self._hooks.on_decision:
                hook(decision)
        return decision

    def _pinned(
        self, pool: PoolConfig, purpose: str, callee_hash: str, now: float
    ) -> NumberState | None:
        """The number announced to this callee, while it may be presented (no claim: its unit
        was counted when it was announced); else the pin is dropped with the reason."""
        assert self.pins is not None
        pin = self.pins.pinned(purpose, callee_hash, now)
        if pin is None:
            return None
        st = self._view.states.get(pin.number)
        if st is None or self._view.pool_of(st).name != pool.name:
            why = "not_in_pool"
        elif not st.healthy(now):
            why = "unhealthy"
        elif pin.reserved_day != self._view.today(pool, now).isoformat():
            why = "another_day"
        else:
            st.last_used_at = max(st.last_used_at, now)
            self.pins.used(pin, now)
            return st
        self._claims.give_back(pin.number, pin.reserved_day)
        self.pins.dropped(pin, why, now)
        return None

    async def _decide(
        self,
        purpose: str,
        callee: str,
        uniqueid: str,
        case_ref: str | None,
        area: str | None,
        audited: bool,
    ) -> Decision:
        if not purpose:
            raise BadRequest("missing_purpose")
        pool = self._view.config.pool_for(purpose)
        if pool is None:
            raise BadRequest("unknown_purpose")
        now = self._clock.now()
        self._view.roll_days(now)
        own_area, callee_hash = self._callee(callee, pool.rules.region)
        ctx = CallContext(uniqueid, purpose, pool.name, callee_hash, case_ref, audited)
        if self.pins is not None and callee_hash is not None and audited:
            pinned = self._pinned(pool, purpose, callee_hash, now)
            if pinned is not None:
                decision = Decision(
                    contract.STATUS_OK, "pinned", pool.name, pinned.number, pinned.name
                )
                return self._record(now, ctx, decision)
        presence, local_reason = presence_wanted(own_area, area_hint(area) if area else None)

        st = await self._claims.claim_from(pool, presence, now)
        if st is not None:
            reason = local_reason if presence and st.presence == presence else "least_used"
            decision = Decision(contract.STATUS_OK, reason, pool.name, st.number, st.name)
            return self._record(now, ctx, decision)
        return self._record(now, ctx, await self._exhausted(pool, presence, now))

    async def _exhausted(self, pool: PoolConfig, presence: str | None, now: float) -> Decision:
        """The pool has no number left: borrow a reserve number, refuse or fall back."""
        mode = pool.rules.on_exhausted
        if mode == "borrow_reserve":
            for reserve in self._view.config.reserve_pools:
                st = await self._claims.claim_from(reserve, presence, now)
                if st is not None:
                    return Decision(
                        contract.STATUS_OK, "borrowed_reserve", pool.name, st.number, st.name
                    )
        if mode == "refuse":
            return Decision(contract.STATUS_REFUSED, "pool_exhausted", pool.name)
        return self._fallback_answer(pool, contract.STATUS_EXHAUSTED, "pool_exhausted", now)

    def _record(self, now: float, ctx: CallContext, decision: Decision) -> Decision:
        if ctx.audited:
            self._audit.add(ctx.audit(now, decision.number, decision.status, decision.reason))
        return decision

    def record_failure(
        self, uniqueid: str, purpose: str, decision: Decision, callee: str, case_ref: str | None
    ) -> None:
        """Audit an answer the route gave without a decision (deadline, error)."""
        self._audit.add(
            AuditRecord(
                self._clock.now(),
                uniqueid,
                purpose or "-",
                decision.pool,
                decision.number,
                decision.status,
                decision.reason,
                self.callee_hash(callee),
                case_ref,
            )
        )
        for hook in self._hooks.on_decision:
            hook(decision)
