"""Outcomes use cases: feed each finished call to drift detection and act on what it says.

May: replay recent outcomes into the detector on start, turn drift signals into alerts
(``number_drift``, ``pool_drift``, resolved on recovery), ask the reputation scanner for a
lookup on a half-threshold signal, and hand ``rest`` / ``quarantine`` policies to the actions
the app wires in (the outbound service owns rests and quarantines). Must not: write call rows
(agent.outcomes.repo owns call_audit) or block the AMI link: a failure here is logged, not raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from zoneinfo import ZoneInfo

from agent import phone
from agent.alerts.service import AlertService
from agent.clock import Clock
from agent.outcomes.config import DriftFields, PoolDriftFields
from agent.outcomes.drift import DriftDetector, DriftTunables, OnDrift, Outcome, Signal
from agent.outcomes.repo import DIALLED_OUTCOMES, OutcomeRepo
from agent.reputation.scanner import ReputationScanner
from agent.store import Database

log = logging.getLogger(__name__)

DriftAction = Callable[[str, str, OnDrift], Awaitable[None]]  # number, pool, policy
REPLAY_SECONDS = 24 * 3600.0


def drift_tunables(
    defaults: DriftFields, pools: Mapping[str, tuple[ZoneInfo, PoolDriftFields]]
) -> dict[str, DriftTunables]:
    """Each pool's tunables: its own keys over ``[defaults]``."""
    out = {}
    for name, (zone, own) in pools.items():
        out[name] = DriftTunables(
            timezone=zone,
            window_minutes=own.drift_window_minutes or defaults.drift_window_minutes,
            min_calls=own.drift_min_calls or defaults.drift_min_calls,
            on_drift=own.on_drift or defaults.on_drift,
        )
    return out


class OutcomesService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        alerts: AlertService,
        scanner: ReputationScanner | None = None,
    ) -> None:
        self._outcomes = OutcomeRepo(db)
        self._clock = clock
        self._alerts = alerts
        self._scanner = scanner
        self._tunables: dict[str, DriftTunables] = {}
        self._fallback = DriftTunables(timezone=ZoneInfo("UTC"))
        self._detector = DriftDetector(self._tunables_of)
        self.on_drift: list[DriftAction] = []

    def configure(self, tunables: Mapping[str, DriftTunables]) -> None:
        self._tunables = dict(tunables)

    async def start(self) -> None:
        """Rebuild the detector's state from the last day of outcomes, quietly: incidents
        already raised stay open in the store; new ones come from new calls."""
        now = self._clock.now()
        rows = await self._outcomes.outcomes(now - REPLAY_SECONDS, now + 1)
        for row in rows:
            if row.pool and row.number and row.outcome in DIALLED_OUTCOMES:
                self._detector.observe(
                    Outcome(
                        row.at, row.pool, row.number, row.outcome == "answered", row.talk_seconds
                    )
                )

    async def call_ended(
        self, at: float, pool: str | None, number: str | None, outcome: str, talk_seconds: int
    ) -> None:
        """A call we placed ended (the AMI link stored it): test its number and pool."""
        if not pool or not number or outcome not in DIALLED_OUTCOMES:
            return  # says nothing about the number (not dialled, cancelled, unknown)
        signals = self._detector.observe(
            Outcome(at, pool, number, outcome == "answered", talk_seconds)
        )
        for signal in signals:
            try:
                await self._handle(signal)
            except Exception:
                log.exception("outcomes: could not act on %s for %s", signal.kind, signal.pool)

    def forget(self, pool: str, number: str | None = None) -> None:
        """A number was rested, quarantined or reinstated: its test starts afresh."""
        self._detector.forget(pool, number)

    def _tunables_of(self, pool: str) -> DriftTunables:
        return self._tunables.get(pool, self._fallback)

    async def _handle(self, signal: Signal) -> None:
        ev = signal.evidence
        details = {"pool": signal.pool, "on_drift": signal.on_drift, **ev.as_dict()}
        if signal.kind == "lookup":
            if self._scanner is not None and signal.number is not None:
                self._scanner.request(signal.number, "answer rate below its peers")
        elif signal.kind == "number_drift" and signal.number is not None:
            message = (
                f"{phone.mask(signal.number)} in {signal.pool}: {ev.answered}/{ev.calls} answered"
                f" vs peers {ev.peer_rate:.0%}"
            )
            _incident, new = await self._alerts.raise_(
                "number_drift", signal.number, message, details=details
            )
            if new and signal.on_drift != "alert":
                for action in self.on_drift:
                    await action(signal.number, signal.pool, signal.on_drift)
            if self._scanner is not None:
                self._scanner.request(signal.number, "drift alert")
        elif signal.kind == "pool_drift":
            message = (
                f"pool {signal.pool}: {ev.answered}/{ev.calls} answered vs its usual"
                f" {ev.peer_rate:.0%}"
            )
            await self._alerts.raise_("pool_drift", signal.pool, message, details=details)
        elif signal.kind == "number_recovered" and signal.number is not None:
            await self._alerts.resolve("number_drift", signal.number, "answer rate back")
        elif signal.kind == "pool_recovered":
            await self._alerts.resolve("pool_drift", signal.pool, "answer rate back")
