"""The one builder: every service is constructed here, from Settings, the config in force and
the store, the same way for ``trustline run`` (agent/app.py) and for admin commands
(agent/cli/, through ``agent.cli.offline.build``).

May: construct services, connect them to each other, and subscribe each service to the config
in force (``CurrentConfig``) with what it takes from a new one. Must not: start or stop
anything (app.py and the CLI do that, in order), open a listening socket, or read pools.toml
(the caller loads it and hands it in).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.admin.audit import AdminAudit
    from agent.agi.routing import Route
    from agent.agi.server import FastAgiServer
    from agent.alerts.deliver import Deliverer
    from agent.alerts.service import AlertService
    from agent.alerts.watch import SystemWatch
    from agent.ami.link import AmiLink
    from agent.clock import Clock
    from agent.compliance.config import Loaded
    from agent.compliance.service import ComplianceService
    from agent.config import Config
    from agent.contact.config import ContactConfig
    from agent.contact.outbox import SmsOutbox
    from agent.contact.service import ContactService
    from agent.http.context import AdminContext
    from agent.http.probes import Probes
    from agent.metrics import Metrics
    from agent.outbound.service import OutboundService
    from agent.outcomes.intake import OutcomeIntake
    from agent.outcomes.service import OutcomesService
    from agent.outcomes.weekly import WeeklyReporter
    from agent.recordings.service import RecordingsService
    from agent.reputation.scanner import ReputationScanner
    from agent.screening.service import ScreeningService
    from agent.settings import Settings
    from agent.store import Database
    from agent.tokens.service import TokenService

log = logging.getLogger(__name__)

Take = Callable[["Config"], Awaitable[None]]


class CurrentConfig:
    """The config in force. app.py owns it: it sets it at start and, on a reload the outbound
    service accepted, pushes the new one to every subscriber. Services that read the config per
    call are handed ``get``; the others subscribe with what they derive from it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._subscribers: list[Take] = []

    def get(self) -> Config:
        return self._config

    def subscribe(self, take: Take) -> None:
        self._subscribers.append(take)

    async def push(self, config: Config) -> None:
        """Swap the config whole, then hand it to every subscriber; one that fails is logged
        and the others still get it."""
        self._config = config
        for take in self._subscribers:
            try:
                await take(config)
            except Exception:
                log.exception("config: a component failed to take the new config")


class Builder:
    """Constructs the services over one store. ``config`` is None for an admin command that
    works without pools.toml (tokens, alerts); ``metrics`` is None outside the agent."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        *,
        hash_key: bytes = b"",
        config: CurrentConfig | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.clock = clock
        self.hash_key = hash_key
        self.current = config
        self.metrics = metrics

    @property
    def config(self) -> Config:
        if self.current is None:
            raise RuntimeError("this builder was made without pools.toml")
        return self.current.get()

    def _subscribe(self, take: Take) -> None:
        if self.current is not None:
            self.current.subscribe(take)

    # -- outbound, screening, patient contact ----------------------------------------------
    def outbound(self, alerts: AlertService | None = None) -> OutboundService:
        """Decisions are counted in the metrics and raise alerts when the agent runs; the
        outbound service takes a reload itself (app.py applies it first: it may refuse)."""
        from agent.outbound.service import DecisionHooks, OutboundService

        hooks = DecisionHooks()
        if self.metrics is not None:
            hooks.on_decision.append(self.metrics.on_decision)
            hooks.on_alert.append(self.metrics.on_alert)
        if alerts is not None:
            hooks.on_alert.append(alerts.raise_soon)
        return OutboundService(self.db, self.clock, self.config, self.hash_key, hooks)

    def screening(self) -> ScreeningService:
        from agent.screening.service import ScreeningService

        assert self.current is not None, "screening needs pools.toml"
        return ScreeningService(
            config_provider=self.current.get, db=self.db, clock=self.clock, hash_key=self.hash_key
        )

    def contact_config(self) -> ContactConfig:
        from agent.contact.config import contact_of

        return contact_of(self.config)

    def sms_outbox(self) -> SmsOutbox:
        from agent.contact.outbox import SmsOutbox

        return SmsOutbox(self.db, self.clock, self.hash_key, lambda: self.contact_config().sms)

    def contact(
        self,
        outbound: OutboundService,
        outbox: SmsOutbox,
        screening: ScreeningService | None = None,
    ) -> ContactService:
        """Pins and the pre-call SMS; with ``screening`` (the agent) the call announced gets
        the pinned number and a callee calling back is let through."""
        from agent.contact.service import ContactService

        service = ContactService(
            self.db, self.clock, self.hash_key, outbound, self.contact_config, outbox
        )
        if screening is not None:
            outbound.pins = service
            screening.also_called = service.called_recently
        return service

    # -- compliance and recordings ---------------------------------------------------------
    def compliance(self, loaded: Loaded | None = None) -> ComplianceService:
        """From the config in force (and following its reloads), or from ``loaded``: the
        compliance sections alone, for the audit commands that work on an invalid pools.toml."""
        from agent.compliance.config import from_sections
        from agent.compliance.service import ComplianceService

        if loaded is not None:
            return ComplianceService(
                self.db, self.clock, self.hash_key, loaded.compliance,
                region=loaded.region, timezone=loaded.timezone,
            )  # fmt: skip
        config = self.config
        service = ComplianceService(
            self.db, self.clock, self.hash_key, from_sections(config.raw),
            region=config.default_region, timezone=config.raw.defaults.timezone,
            snapshot=self.settings.data_dir / "optouts.json",  # for a start with the store down
        )  # fmt: skip

        async def take(new: Config) -> None:
            service.apply_config(
                from_sections(new.raw),
                region=new.default_region,
                timezone=new.raw.defaults.timezone,
            )

        self._subscribe(take)
        return service

    def recordings(self) -> RecordingsService:
        from agent.recordings.service import RecordingsService

        return RecordingsService(self.settings, self.db, self.clock)

    # -- alerts and the reputation loop ----------------------------------------------------
    def alerts(self) -> AlertService:
        """With pools.toml, its webhooks (and their reloads); without, alerts are only read."""
        from agent.alerts.config import load_webhooks
        from agent.alerts.service import AlertService

        if self.current is None:
            return AlertService(self.db, self.clock)
        config = self.config
        service = AlertService(self.db, self.clock, load_webhooks(config.raw.alerts, config.source))

        async def take(new: Config) -> None:
            service.set_webhooks(load_webhooks(new.raw.alerts, new.source))

        self._subscribe(take)
        return service

    def deliverer(self, alerts: AlertService) -> Deliverer:
        from agent.alerts.deliver import Deliverer

        deliverer = Deliverer(self.db, self.clock, alerts.webhooks)
        alerts.on_queued.append(deliverer.wake)
        if self.current is not None:

            async def take(new: Config) -> None:  # after the alert service took the webhooks
                deliverer.configure(alerts.webhooks, new.raw.alerts.retry_hours)

            self._subscribe(take)
            deliverer.configure(alerts.webhooks, self.config.raw.alerts.retry_hours)
        return deliverer

    def reputation(
        self, alerts: AlertService, outbound: OutboundService | None = None
    ) -> tuple[ReputationScanner, OutcomesService]:
        """The scanner and the drift watch, configured now and on every reload; a flag or a
        drift rests or quarantines the number (the pool's on_flag / on_drift)."""
        from agent.outcomes.service import OutcomesService

        scanner = self.scanner(alerts)
        outcomes = OutcomesService(self.db, self.clock, alerts, scanner)
        if outbound is not None:
            scanner.on_flag.append(outbound.sideline)
            outcomes.on_drift.append(outbound.sideline)

        async def take(config: Config) -> None:
            _configure_reputation(config, scanner, outcomes)

        _configure_reputation(self.config, scanner, outcomes)
        self._subscribe(take)
        return scanner, outcomes

    def scanner(self, alerts: AlertService) -> ReputationScanner:
        """Unconfigured: the caller (``reputation`` below, or a CSV import) configures it."""
        from agent.reputation.scanner import ReputationScanner

        return ReputationScanner(self.db, self.clock, alerts)

    def weekly(self, alerts: AlertService) -> WeeklyReporter:
        from agent.outcomes.weekly import WeeklyReporter

        assert self.current is not None, "the weekly report needs pools.toml"
        reports = self.settings.data_dir / "reports"
        return WeeklyReporter(self.db, self.clock, alerts, self.current.get, reports)

    # -- the protocol adapters -------------------------------------------------------------
    def ami(
        self,
        outbound: OutboundService,
        recordings: RecordingsService,
        compliance: ComplianceService,
    ) -> tuple[AmiLink, OutcomeIntake]:
        """The AMI link: call outcomes in, recordings handed over, the AstDB fallback copy
        kept; it re-syncs that copy on every reload."""
        from agent.ami.link import AmiLink
        from agent.outbound.astdb import FallbackSync
        from agent.outcomes.intake import OutcomeIntake

        registry = self.metrics.registry if self.metrics is not None else None
        intake = OutcomeIntake(self.db, outbound, recordings.on_recording_complete, registry)
        link = AmiLink(
            self.settings, self.clock, intake, FallbackSync(outbound.fallbacks), registry
        )
        link.on_user_event.append(compliance.on_user_event)

        async def take(_config: Config) -> None:
            await link.config_changed()

        self._subscribe(take)
        return link, intake

    def routes(
        self,
        outbound: OutboundService,
        compliance: ComplianceService,
        screening: ScreeningService,
    ) -> tuple[dict[str, Route], Route]:
        """A FastAGI route per script, and the one an unknown script gets (outbound's)."""
        from agent import contract
        from agent.compliance.route import ComplianceRoute
        from agent.outbound.route import OutboundRoute
        from agent.screening.route import InboundRoute

        fallback = OutboundRoute(outbound)
        return {
            contract.ROUTE_OUTBOUND: ComplianceRoute(fallback, compliance, outbound),
            contract.ROUTE_INBOUND: InboundRoute(screening),
        }, fallback

    def agi(self, routes: dict[str, Route], fallback: Route) -> FastAgiServer:
        from agent.agi.server import FastAgiServer

        s = self.settings
        return FastAgiServer(
            routes,
            deadline=s.deadline_ms / 1000.0,
            allowed=s.agi_allowed_networks,
            on_answer=self.metrics.on_answer if self.metrics is not None else None,
            fallback_route=fallback,
            max_in_flight=s.agi_max_in_flight,
        )

    def system_watch(self, alerts: AlertService, probes: Probes) -> SystemWatch:
        """AMI down, store down, keyring missing, deadline misses: alerts from the same
        checks /readyz shows (agent/alerts/watch.py)."""
        from agent.alerts.watch import SystemWatch
        from agent.http.probes import counted, healthy

        assert self.metrics is not None, "the system watch runs in the agent"
        misses = self.metrics.deadline_misses
        return SystemWatch(
            alerts,
            self.clock,
            {"ami_down": healthy(probes.ami), "keyring_missing": healthy(probes.recordings)},
            healthy(probes.store),
            lambda: counted(misses),
            lambda: self.config.raw.alerts.deadline_misses_per_5min,
        )

    def tokens(self, read_db: Database | None = None) -> TokenService:
        from agent.tokens.service import TokenService

        return TokenService(self.db, self.clock, read_db=read_db)

    def audit(self) -> AdminAudit:
        from agent.admin.audit import AdminAudit

        return AdminAudit(self.db, self.clock)

    def admin(
        self,
        read_db: Database,
        *,
        outbound: OutboundService,
        alerts: AlertService,
        screening: ScreeningService,
        recordings: RecordingsService,
        contact: ContactService | None,
    ) -> AdminContext:
        """The API's and dashboard's services; their reads go through ``read_db``, a
        connection of their own, so a page never queues in front of a call's claim."""
        from agent.admin.actions import AdminActions
        from agent.admin.views import DashboardViews
        from agent.http.context import AdminContext

        assert self.current is not None, "the admin API needs pools.toml"
        actions = AdminActions(
            outbound=outbound,
            alerts=alerts,
            screening=screening,
            recordings=recordings,
            tokens=self.tokens(read_db),
            audit=self.audit(),
            hash_key=self.hash_key,
        )
        return AdminContext(
            actions,
            DashboardViews(read_db),
            read_db,
            self.clock,
            self.current.get,
            contact=contact,
        )


def _configure_reputation(
    config: Config, scanner: ReputationScanner, outcomes: OutcomesService
) -> None:
    from agent.outcomes.drift import DriftTunables
    from agent.reputation.providers import HttpJsonProvider
    from agent.reputation.scanner import PoolOf

    rep = config.raw.reputation
    scanner.configure(
        PoolOf(config.numbers),
        {p: pc.rules.on_flag for p, pc in config.pools.items()},
        HttpJsonProvider(rep.provider) if rep.provider else None,
        scan_minutes=rep.scan_minutes,
        requests_per_minute=rep.provider.requests_per_minute if rep.provider else 30,
    )
    outcomes.configure(
        {
            p: DriftTunables(r.timezone, r.drift_window_minutes, r.drift_min_calls, r.on_drift)
            for p, r in ((p, pc.rules) for p, pc in config.pools.items())
        }
    )
