"""The one place that builds, starts and stops everything, in that order and in reverse.

No other module creates live objects for others. Reloading pools.toml builds a new Config and
hands it to the services whole; a bad file is logged and the last good config stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import secrets
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent import contract, phone
from agent.agi.routing import Route
from agent.agi.server import FastAgiServer
from agent.alerts.config import load_webhooks
from agent.alerts.deliver import Deliverer
from agent.alerts.metrics import AlertMetrics
from agent.alerts.service import AlertService
from agent.alerts.watch import Check, SystemWatch
from agent.ami.link import AmiLink
from agent.clock import Clock, SystemClock
from agent.compliance.config import from_sections
from agent.compliance.route import ComplianceRoute
from agent.compliance.service import ComplianceService
from agent.config import Config, load_config
from agent.contact.config import ContactConfig, contact_of
from agent.contact.http import vcard_routes
from agent.contact.outbox import SmsOutbox
from agent.contact.service import ContactService
from agent.errors import ConfigError, StoreError
from agent.http.app import build_http_app, cached, make_runner
from agent.http.context import AdminContext
from agent.metrics import Metrics
from agent.outbound.astdb import FallbackSync
from agent.outbound.route import OutboundRoute
from agent.outbound.service import DecisionHooks, OutboundService
from agent.outcomes.drift import DriftTunables
from agent.outcomes.intake import OutcomeIntake
from agent.outcomes.service import OutcomesService
from agent.outcomes.weekly import WeeklyReporter
from agent.recordings.service import RecordingsService
from agent.reputation.providers import HttpJsonProvider
from agent.reputation.scanner import ReputationScanner
from agent.screening.route import InboundRoute
from agent.screening.service import ScreeningService
from agent.sdnotify import Notifier
from agent.settings import Settings
from agent.store import Database, open_database

log = logging.getLogger(__name__)


def load_hash_key(path: Path) -> bytes:
    """The secret that keys callee hashes; created on first use, readable by the agent only."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
        return key
    if len(key) < 32:
        raise ConfigError(str(path), ["callee hash key is shorter than 32 bytes"])
    return key


async def open_store(settings: Settings, *, wait: bool = True) -> Database:
    """The store TRUSTLINE_DATABASE_URL names; ``wait=False`` lets the agent start while a
    PostgreSQL server is still unreachable (calls get the fallback until it connects)."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # store and keys: agent only
    return await open_database(settings.database, pool_size=settings.database_pool_size, wait=wait)


class Agent:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.db: Database | None = None
        self.outbound: OutboundService | None = None
        self.agi: FastAgiServer | None = None
        self.screening: ScreeningService | None = None
        self.recordings: RecordingsService | None = None
        self.ami: AmiLink | None = None
        self.alerts: AlertService | None = None
        self.scanner: ReputationScanner | None = None
        self.outcomes: OutcomesService | None = None
        self.contact: ContactService | None = None
        self.watch: SystemWatch | None = None
        self.compliance: ComplianceService | None = None
        self.routes: dict[str, Route] = {}
        self._http: web.AppRunner | None = None
        self._config_mtime: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self.config_listeners: list[Callable[[Config], Awaitable[None]]] = []
        self.http_address: tuple[str, int] | None = None
        self.read_db: Database | None = None  # the dashboard's and API's reads

    @property
    def config(self) -> Config:
        assert self.outbound is not None
        return self.outbound.config

    async def start(self) -> None:
        s = self.settings
        phone.preload_metadata()
        config = load_config(s.config, s.data_dir)  # a bad file is fatal here: nothing to keep
        self._config_mtime = _mtime(s.config)
        self.metrics.config_loaded.set(1)
        first_start = s.database_url is None and not s.database_path.exists()
        self.db = await open_store(s, wait=False)
        self._stoppers.append(self.db.close)
        await self.db.start_checkpoints()  # own connection and timer, never inside a claim
        hash_key = load_hash_key(s.hash_key_path)

        await self._start_alerts(config)
        assert self.alerts is not None
        hooks = DecisionHooks(
            on_decision=[self.metrics.on_decision],
            on_alert=[self.metrics.on_alert, self.alerts.raise_soon],
        )
        self.outbound = OutboundService(self.db, self.clock, config, hash_key, hooks)
        # PostgreSQL not there yet: serve (every call gets its pool's fallback) and retry.
        await self._start_or_retry(self.outbound.start, "outbound")
        self._stoppers.append(self.outbound.stop)
        self.metrics.watch_usable(self.outbound.usable_by_pool)

        self.screening = ScreeningService(
            config_provider=lambda: self.config, db=self.db, clock=self.clock, hash_key=hash_key
        )
        self._stoppers.append(self.screening.close)
        await self._start_contact(hash_key)

        # Recordings before AMI: the link hands completed recordings to this service.
        self.compliance = ComplianceService(
            self.db,
            self.clock,
            hash_key,
            from_sections(config.raw),
            region=config.default_region,
            timezone=config.raw.defaults.timezone,
        )
        await self._start_or_retry(self.compliance.start, "compliance")
        self._stoppers.append(self.compliance.stop)
        self.config_listeners.append(self._compliance_config_changed)

        self.recordings = RecordingsService(s, self.db, self.clock)
        await self.recordings.start()
        self._stoppers.append(self.recordings.stop)
        # The MixMonitor post-command hands finished files over this socket.
        handoff = self.recordings.handoff_server()
        if await handoff.start():
            self._stoppers.append(handoff.close)

        intake: OutcomeIntake | None = None
        if s.ami_user:
            intake = OutcomeIntake(
                self.db, self.outbound, self.recordings.on_recording_complete, self.metrics.registry
            )
            fallbacks = FallbackSync(self.outbound.fallbacks)
            self.ami = AmiLink(s, self.clock, intake, fallbacks, self.metrics.registry)
            self.ami.on_user_event.append(self.compliance.on_user_event)
            await self.ami.start()
            self._stoppers.append(self.ami.stop)
            self.config_listeners.append(lambda _config: self._ami_config_changed())
        else:
            log.info("ami: TRUSTLINE_AMI_USER is not set; running without the AMI link")

        await self._start_reputation_loop(config)
        if intake is not None and self.outcomes is not None:
            intake.on_call_ended.append(self.outcomes.call_ended)

        outbound_route = OutboundRoute(self.outbound)
        self.routes[contract.ROUTE_OUTBOUND] = ComplianceRoute(
            outbound_route, self.compliance, self.outbound
        )
        self.routes[contract.ROUTE_INBOUND] = InboundRoute(self.screening)
        self.agi = FastAgiServer(
            self.routes,
            deadline=s.deadline_ms / 1000.0,
            allowed=s.agi_allowed_networks,
            on_answer=self.metrics.on_answer,
            fallback_route=outbound_route,
            max_in_flight=s.agi_max_in_flight,
        )
        await self.agi.start(*s.agi_address)
        warn_if_exposed(s)
        self._stoppers.append(self.agi.stop)

        http_app = build_http_app(
            self.metrics,
            [
                self._ready_config,
                cached(self._ready_store),  # a store query at most once a second
                self._ready_ami,
                self._ready_recordings,
            ],
            admin=await self._admin_context(hash_key),
        )
        http_app.add_routes(vcard_routes(lambda: self.config, self._contact_config))
        self._http = make_runner(http_app)
        await self._http.setup()
        site = web.TCPSite(self._http, *s.http_address, ssl_context=tls_context(s))
        await site.start()
        self.http_address = self._http.addresses[0][:2] if self._http.addresses else s.http_address
        self._stoppers.append(self._http.cleanup)
        log.info("http: listening on %s:%s", *self.http_address)

        await self._start_system_watch()
        self._tasks.append(asyncio.create_task(self._watch_config(), name="config-watch"))
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        log.info(
            "trustline: started with %d pools, %d numbers", len(config.pools), len(config.numbers)
        )
        if first_start:
            log_next_steps(s, self.http_address)

    async def _admin_context(self, hash_key: bytes) -> AdminContext:
        """The API's and dashboard's services; their reads go through a connection of their
        own, so a page never queues in front of a call's claim."""
        from agent.admin.actions import AdminActions
        from agent.admin.audit import AdminAudit
        from agent.admin.views import DashboardViews
        from agent.tokens.service import TokenService

        assert self.db is not None
        s = self.settings
        self.read_db = await open_database(s.database, migrate=False, pool_size=2, wait=False)
        self._stoppers.append(self.read_db.close)
        actions = AdminActions(
            outbound=lambda: self.outbound,
            alerts=self.alerts,
            screening=self.screening,
            recordings=self.recordings,
            tokens=TokenService(self.db, self.clock, read_db=self.read_db),
            audit=AdminAudit(self.db, self.clock),
            hash_key=hash_key,
        )
        return AdminContext(
            actions,
            DashboardViews(self.read_db),
            self.read_db,
            self.clock,
            lambda: self.config,
            contact=self.contact,
        )

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        while self._stoppers:
            stopper = self._stoppers.pop()
            try:
                await asyncio.wait_for(stopper(), 10.0)
            except Exception:
                log.exception("trustline: a component did not stop cleanly")
        log.info("trustline: stopped")

    async def _start_or_retry(self, start: Callable[[], Awaitable[None]], what: str) -> None:
        """Start a component that reads the store; when the store does not answer (PostgreSQL
        down at start), the agent starts anyway and the component is started again, with
        backoff, until the store answers."""
        try:
            await start()
        except StoreError as exc:
            log.error("%s: %s; starting without the store and retrying", what, exc)
            task = asyncio.create_task(self._start_later(start, what), name=f"{what}-start")
            self._tasks.append(task)

    async def _start_later(
        self,
        start: Callable[[], Awaitable[None]],
        what: str,
        initial: float = 0.5,
        maximum: float = 5.0,
    ) -> None:
        delay = initial
        while True:
            await asyncio.sleep(delay)
            try:
                await start()
            except StoreError as exc:
                delay = min(maximum, delay * 2)
                log.warning("%s: %s; retrying in %.1f s", what, exc, delay)
                continue
            log.info("%s: store reached", what)
            return

    # -- patient contact: pins, the SMS outbox, the vCard --------------------------------------
    def _contact_config(self) -> ContactConfig:
        return contact_of(self.config)

    async def _start_contact(self, hash_key: bytes) -> None:
        assert self.db is not None and self.outbound is not None and self.screening is not None
        outbox = SmsOutbox(self.db, self.clock, hash_key, lambda: self._contact_config().sms)
        await outbox.start()
        self._stoppers.append(outbox.stop)
        self.contact = ContactService(
            self.db, self.clock, hash_key, self.outbound, self._contact_config, outbox
        )
        await self.contact.start()
        self._stoppers.append(self.contact.stop)
        self.outbound.pins = self.contact  # the call announced gets the pinned number
        self.screening.also_called = self.contact.called_recently

    # -- the reputation loop: alerts, drift, reputation lookups, the weekly report ----------
    async def _start_alerts(self, config: Config) -> None:
        assert self.db is not None
        alert_metrics = AlertMetrics(self.metrics.registry)
        alerts = self.alerts = AlertService(
            self.db, self.clock, load_webhooks(config.raw.alerts, config.source)
        )

        async def seed_metrics() -> None:
            alert_metrics.seed(await alerts.incidents(open_only=True))

        await self._start_or_retry(seed_metrics, "alerts")
        alerts.on_change.append(alert_metrics.on_change)
        deliverer = Deliverer(
            self.db,
            self.clock,
            lambda: alerts.webhooks,
            retry_hours=lambda: self.config.raw.alerts.retry_hours,
        )
        deliverer.on_result.append(alert_metrics.on_delivery)
        self.alerts.on_queued.append(deliverer.wake)
        await deliverer.start()
        self._stoppers += [deliverer.stop, self.alerts.drain]
        self.config_listeners.append(self._alerts_config_changed)

    async def _start_reputation_loop(self, config: Config) -> None:
        assert self.db is not None and self.alerts is not None
        self.scanner = ReputationScanner(self.db, self.clock, self.alerts)
        self.outcomes = OutcomesService(self.db, self.clock, self.alerts, self.scanner)
        if self.outbound is not None:  # the pool's on_drift / on_flag: rest or quarantine
            self.scanner.on_flag.append(self.outbound.sideline)
            self.outcomes.on_drift.append(self.outbound.sideline)
        await self._reputation_config_changed(config)
        await self._start_or_retry(self.scanner.start, "reputation")
        self._stoppers.append(self.scanner.stop)
        await self._start_or_retry(self.outcomes.start, "outcomes")
        weekly = WeeklyReporter(
            self.db,
            self.clock,
            self.alerts,
            lambda: self.config,
            self.settings.data_dir / "reports",
        )
        await weekly.start()
        self._stoppers.append(weekly.stop)
        self.config_listeners.append(self._reputation_config_changed)

    async def _start_system_watch(self) -> None:
        """AMI down, store down, keyring missing, deadline misses: alerts from the same
        checks /readyz shows (agent/alerts/watch.py)."""
        assert self.alerts is not None

        def check(ready: Callable[[], Awaitable[tuple[str, bool, str]]]) -> Check:
            async def healthy() -> tuple[bool, str]:
                _name, ok, detail = await ready()
                return ok, detail

            return healthy

        def deadline_misses() -> float:
            samples = (s for m in self.metrics.deadline_misses.collect() for s in m.samples)
            return sum(s.value for s in samples if s.name.endswith("_total"))

        self.watch = SystemWatch(
            self.alerts,
            self.clock,
            {"ami_down": check(self._ready_ami), "keyring_missing": check(self._ready_recordings)},
            check(self._ready_store),
            deadline_misses,
            lambda: self.config.raw.alerts.deadline_misses_per_5min,
        )
        await self._start_or_retry(self.watch.start, "alerts watch")
        self._stoppers.append(self.watch.stop)

    async def _alerts_config_changed(self, config: Config) -> None:
        assert self.alerts is not None
        self.alerts.set_webhooks(load_webhooks(config.raw.alerts, config.source))

    async def _reputation_config_changed(self, config: Config) -> None:
        assert self.scanner is not None and self.outcomes is not None
        rep = config.raw.reputation
        self.scanner.configure(
            {n: c.pool for n, c in config.numbers.items()},
            {p: pc.rules.on_flag for p, pc in config.pools.items()},
            HttpJsonProvider(rep.provider) if rep.provider else None,
            scan_minutes=rep.scan_minutes,
            requests_per_minute=rep.provider.requests_per_minute if rep.provider else 30,
        )
        self.outcomes.configure(
            {
                p: DriftTunables(
                    pc.rules.timezone,
                    pc.rules.drift_window_minutes,
                    pc.rules.drift_min_calls,
                    pc.rules.on_drift,
                )
                for p, pc in config.pools.items()
            }
        )

    # -- config reload ---------------------------------------------------------------------
    def _on_sighup(self) -> None:
        log.info("config: SIGHUP received, reloading %s", self.settings.config)
        self._tasks.append(asyncio.create_task(self._reload_quietly(), name="config-reload"))

    async def _reload_quietly(self) -> None:
        await self.reload_config()  # the outcome is logged and counted there

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(self.settings.config_poll_seconds)
            mtime = _mtime(self.settings.config)
            if mtime is not None and mtime != self._config_mtime:
                # A rejected file waits for its next edit; a store failure is retried next tick.
                if await self.reload_config() is not None:
                    self._config_mtime = mtime

    async def reload_config(self) -> bool | None:
        """Load pools.toml again; apply it whole, or keep the running config.

        True: applied. False: the file is invalid (logged with every problem). None: the file
        is valid but the store could not take it now; the running config stays, retry later.
        """
        assert self.outbound is not None
        try:
            config = load_config(self.settings.config, self.settings.data_dir)
        except ConfigError as exc:
            log.error(
                "config: %s rejected, keeping the running config: %s",
                exc.source,
                "; ".join(exc.problems),
            )
            self.metrics.config_reloads.labels("rejected").inc()
            self.metrics.config_loaded.set(0)
            return False
        try:
            await self.outbound.apply_config(config)
        except Exception:
            log.exception("config: %s is valid but could not be applied; will retry", config.source)
            self.metrics.config_reloads.labels("failed").inc()
            return None
        for listener in self.config_listeners:
            try:
                await listener(config)
            except Exception:
                log.exception("config: a component failed to take the new config")
        self.metrics.config_reloads.labels("applied").inc()
        self.metrics.config_loaded.set(1)
        log.info(
            "config: reloaded %s (%d pools, %d numbers)",
            config.source,
            len(config.pools),
            len(config.numbers),
        )
        return True

    # -- readiness -------------------------------------------------------------------------
    async def _ready_config(self) -> tuple[str, bool, str]:
        ok = self.outbound is not None
        return "config", ok, self.config.source if ok else "not loaded"

    async def _compliance_config_changed(self, config: Config) -> None:
        assert self.compliance is not None
        self.compliance.apply_config(
            from_sections(config.raw),
            region=config.default_region,
            timezone=config.raw.defaults.timezone,
        )

    async def _ami_config_changed(self) -> None:
        assert self.ami is not None
        await self.ami.config_changed()

    async def _ready_ami(self) -> tuple[str, bool, str]:
        if self.ami is None:
            return "ami", True, "disabled: TRUSTLINE_AMI_USER is not set"
        ok, detail = self.ami.status()
        return "ami", ok, detail

    async def _ready_recordings(self) -> tuple[str, bool, str]:
        assert self.recordings is not None
        if not self.settings.recordings_dir.is_dir():
            # No MixMonitor folder on this host: nothing is recorded here, nothing to protect.
            return "recordings", True, f"not in use: {self.settings.recordings_dir} does not exist"
        ok, detail = self.recordings.readiness()
        return "recordings", ok, detail

    async def _ready_store(self) -> tuple[str, bool, str]:
        assert self.db is not None
        # Read-only: a probe must never queue a write in front of calls. A read-only file or
        # folder shows through access(); a full disk shows in the writes calls make.
        try:
            await self.db.fetchone("SELECT version FROM state_version WHERE id = 1")
        except StoreError as exc:  # e.g. PostgreSQL unreachable: say why (URL redacted)
            return "store", False, str(exc)
        path = getattr(self.db, "path", None)  # SQLite: a read-only file or folder shows here
        if isinstance(path, Path) and not (
            os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
        ):
            return "store", False, f"{path} is not writable"
        return "store", True, self.db.description


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the HTTP listener when TRUSTLINE_HTTP_TLS_CERT and _KEY are both set."""
    cert, key = settings.http_tls_cert, settings.http_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError(
            "environment", ["TRUSTLINE_HTTP_TLS_CERT and TRUSTLINE_HTTP_TLS_KEY go together"]
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("environment", [f"TRUSTLINE_HTTP_TLS_CERT/KEY: {exc}"]) from None
    return context


def warn_if_exposed(settings: Settings) -> None:
    """FastAGI on a non-loopback address is reachable from the network: say who may connect."""
    host, _ = settings.agi_address
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning(
            "fastagi: listening on %s, reachable from the network; "
            "TRUSTLINE_AGI_ALLOW in force: %s",
            settings.agi_listen,
            ", ".join(str(n) for n in settings.agi_allowed_networks),
        )


def log_next_steps(settings: Settings, http: tuple[str, int] | None) -> None:
    host, port = settings.agi_address
    ready = f"http://{http[0]}:{http[1]}/readyz" if http else "/readyz"
    log.info(
        "trustline: first start, new store in %s. Next: "
        "(1) copy dialplan/*.conf to /etc/asterisk/ and include them (asterisk-conf/README.md), "
        "with TRUSTLINE_AGI_URL=agi://%s:%d in [globals] if Asterisk is not on this host; "
        "(2) check %s says ready; "
        "(3) place a test call and look for TRUSTLINE_STATUS=ok in the Asterisk log",
        settings.data_dir,
        host,
        port,
        ready,
    )


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None


async def run_agent(settings: Settings) -> int:
    # The store's worker thread hands results back through the GIL; at the default 5 ms switch
    # interval a busy event loop makes every store round trip wait up to 5 ms.
    sys.setswitchinterval(0.0005)
    agent = Agent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_environ()  # systemd Type=notify; a no-op elsewhere
    try:
        await agent.start()
    except BaseException:
        notifier.notify("STATUS=start-up failed")
        await agent.stop()
        notifier.close()
        raise
    # What start-up built (config, number view, phonenumbers metadata) lives until the end:
    # keep it out of the collector's scans, so a full collection does not pause calls.
    gc.collect()
    gc.freeze()
    agi = ", ".join(f"{h}:{p}" for h, p in agent.agi.sockets) if agent.agi else "-"
    http = ":".join(map(str, agent.http_address)) if agent.http_address else "-"
    notifier.notify("READY=1", f"STATUS=serving: FastAGI {agi}, HTTP {http}")
    watchdog = asyncio.create_task(notifier.watchdog(), name="sd-watchdog")
    try:
        await stop.wait()
    finally:
        notifier.notify("STOPPING=1", "STATUS=stopping: finishing sessions")
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await agent.stop()
        notifier.close()
    return 0
