"""The one owner of start-up and shutdown: starts what agent.build constructs, in order, and
stops it in reverse with a deadline. Owns the config in force: a reload builds a new Config,
the outbound service takes it first (it may refuse: store down), then every other service
gets it whole (``CurrentConfig.push``); a bad file is logged and the last good config stays.
Only the CLI's ``trustline run`` imports this module."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from agent import memory, phone
from agent.agi.routing import Route
from agent.agi.server import FastAgiServer
from agent.alerts.metrics import AlertMetrics
from agent.alerts.service import AlertService
from agent.alerts.watch import SystemWatch
from agent.ami.link import AmiLink
from agent.build import Builder, CurrentConfig
from agent.clock import Clock, SystemClock
from agent.compliance.service import ComplianceService
from agent.config import Config, load_config
from agent.contact.http import vcard_routes
from agent.contact.service import ContactService
from agent.datadir import load_hash_key, open_store
from agent.errors import ConfigError, StoreError
from agent.http.app import build_http_app, cached, make_runner
from agent.http.probes import Probes
from agent.http.security import tls_context
from agent.metrics import Metrics
from agent.outbound.service import OutboundService
from agent.outcomes.intake import OutcomeIntake
from agent.outcomes.service import OutcomesService
from agent.recordings.service import RecordingsService
from agent.reputation.scanner import ReputationScanner
from agent.screening.service import ScreeningService
from agent.sdnotify import Notifier
from agent.settings import Settings
from agent.store import Database, open_database

log = logging.getLogger(__name__)
Stopper = Callable[[], Awaitable[None]]


class Agent:
    """Owns start-up, shutdown and the config in force; the services come from the builder."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.current: CurrentConfig | None = None
        self.db: Database | None = None
        self.outbound: OutboundService | None = None
        self.agi: FastAgiServer | None = None
        self.screening: ScreeningService | None = None
        self.recordings: RecordingsService | None = None
        self.ami: AmiLink | None = None
        self.intake: OutcomeIntake | None = None
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
        self._stoppers: list[Stopper] = []
        self.http_address: tuple[str, int] | None = None
        self.read_db: Database | None = None  # the dashboard's and API's reads

    @property
    def config(self) -> Config:
        assert self.current is not None
        return self.current.get()

    async def start(self) -> None:
        s = self.settings
        phone.preload_metadata()
        self.current = CurrentConfig(load_config(s.config, s.data_dir))  # a bad file is fatal
        self._config_mtime = _mtime(s.config)
        self.metrics.config_loaded.set(1)
        first_start = s.database_url is None and not s.database_path.exists()
        self.db = await open_store(s, wait=False)
        self._stoppers.append(self.db.close)
        await self.db.start_checkpoints()  # own connection and timer, never inside a claim
        build = Builder(
            s,
            self.db,
            self.clock,
            hash_key=load_hash_key(s.hash_key_path),
            config=self.current,
            metrics=self.metrics,
        )
        await self._start_alerts(build)
        await self._start_calls(build)
        await self._start_recordings(build)  # before AMI: the link hands recordings over
        await self._start_ami(build)
        await self._start_reputation_loop(build)
        await self._start_agi(build)
        probes = await self._start_http(build)
        await self._start_system_watch(build, probes)
        self._tasks.append(asyncio.create_task(self._watch_config(), name="config-watch"))
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        pools, numbers = len(self.config.pools), len(self.config.numbers)
        log.info("trustline: started with %d pools, %d numbers", pools, numbers)
        if first_start:
            log_next_steps(s, self.http_address)

    async def _started(self, start: Callable[[], Awaitable[None]], stop: Stopper) -> None:
        await start()
        self._stoppers.append(stop)

    async def _start_calls(self, build: Builder) -> None:
        """Outbound (claims), screening (inbound) and patient contact (pins, SMS)."""
        outbound = self.outbound = build.outbound(self.alerts)
        # PostgreSQL not there yet: serve (every call gets its pool's fallback) and retry.
        await self._start_or_retry(outbound.start, "outbound")
        self._stoppers.append(outbound.stop)
        self.metrics.watch_usable(outbound.usable_by_pool)
        self.screening = build.screening()
        self._stoppers.append(self.screening.close)
        outbox = build.sms_outbox()
        await self._started(outbox.start, outbox.stop)
        self.contact = build.contact(outbound, outbox, self.screening)
        await self._started(self.contact.start, self.contact.stop)

    async def _start_recordings(self, build: Builder) -> None:
        self.compliance = build.compliance()
        await self._start_or_retry(self.compliance.start, "compliance")
        self._stoppers.append(self.compliance.stop)
        self.recordings = build.recordings()
        await self._started(self.recordings.start, self.recordings.stop)
        # The MixMonitor post-command hands finished files over this socket.
        handoff = self.recordings.handoff_server()
        if await handoff.start():
            self._stoppers.append(handoff.close)

    async def _start_ami(self, build: Builder) -> None:
        if not self.settings.ami_user:
            log.info("ami: TRUSTLINE_AMI_USER is not set; running without the AMI link")
            return
        assert self.outbound and self.recordings and self.compliance
        self.ami, self.intake = build.ami(self.outbound, self.recordings, self.compliance)
        await self._started(self.ami.start, self.ami.stop)

    async def _start_agi(self, build: Builder) -> None:
        assert self.outbound and self.compliance and self.screening
        self.routes, fallback = build.routes(self.outbound, self.compliance, self.screening)
        self.agi = build.agi(self.routes, fallback)  # tests may swap a route in self.routes
        await self.agi.start(*self.settings.agi_address)
        warn_if_exposed(self.settings)
        self._stoppers.append(self.agi.stop)

    async def _start_http(self, build: Builder) -> Probes:
        """Probes, metrics, the admin API and dashboard, the vCards; the API's and dashboard's
        reads go through a connection of their own."""
        assert self.outbound and self.alerts and self.screening and self.recordings
        assert self.current is not None and self.db is not None
        s = self.settings
        self.read_db = await open_database(s.database, migrate=False, pool_size=2, wait=False)
        self._stoppers.append(self.read_db.close)
        admin = build.admin(
            self.read_db, outbound=self.outbound, alerts=self.alerts, screening=self.screening,
            recordings=self.recordings, contact=self.contact,
        )  # fmt: skip
        probes = Probes(s, self.current.get, self.db, self.ami, self.recordings)
        checks = [probes.config, cached(probes.store), probes.ami, probes.recordings]
        http_app = build_http_app(self.metrics, checks, admin=admin)
        http_app.add_routes(vcard_routes(self.current.get, build.contact_config))
        self._http = make_runner(http_app)
        await self._http.setup()
        site = web.TCPSite(self._http, *s.http_address, ssl_context=tls_context(s))
        await site.start()
        self.http_address = self._http.addresses[0][:2] if self._http.addresses else s.http_address
        self._stoppers.append(self._http.cleanup)
        log.info("http: listening on %s:%s", *self.http_address)
        return probes

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

    # -- alerts and the reputation loop: drift, reputation lookups, the weekly report ---------
    async def _start_alerts(self, build: Builder) -> None:
        alert_metrics = AlertMetrics(self.metrics.registry)
        alerts = self.alerts = build.alerts()

        async def seed_metrics() -> None:
            alert_metrics.seed(await alerts.incidents(open_only=True))

        await self._start_or_retry(seed_metrics, "alerts")
        alerts.on_change.append(alert_metrics.on_change)
        deliverer = build.deliverer(alerts)
        deliverer.on_result.append(alert_metrics.on_delivery)
        await deliverer.start()
        self._stoppers += [deliverer.stop, alerts.drain]

    async def _start_reputation_loop(self, build: Builder) -> None:
        assert self.alerts is not None
        self.scanner, self.outcomes = build.reputation(self.alerts, self.outbound)
        await self._start_or_retry(self.scanner.start, "reputation")
        self._stoppers.append(self.scanner.stop)
        await self._start_or_retry(self.outcomes.start, "outcomes")
        if self.intake is not None:
            self.intake.on_call_ended.append(self.outcomes.call_ended)
        weekly = build.weekly(self.alerts)
        await self._started(weekly.start, weekly.stop)

    async def _start_system_watch(self, build: Builder, probes: Probes) -> None:
        assert self.alerts is not None
        self.watch = build.system_watch(self.alerts, probes)
        await self._start_or_retry(self.watch.start, "alerts watch")
        self._stoppers.append(self.watch.stop)

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
        assert self.outbound is not None and self.current is not None
        try:
            s = self.settings  # read on a thread: 100,000 numbers take seconds; calls go on
            config = await asyncio.to_thread(load_config, s.config, s.data_dir)
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
        await self.current.push(config)  # the outbound service took it: now every other one
        self.metrics.config_reloads.labels("applied").inc()
        self.metrics.config_loaded.set(1)
        log.info(
            "config: reloaded %s (%d pools, %d numbers)",
            config.source,
            len(config.pools),
            len(config.numbers),
        )
        return True


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
        with memory.starting():  # the collector is back on once settled
            await agent.start()
    except BaseException:
        notifier.notify("STATUS=start-up failed")
        await agent.stop()
        notifier.close()
        raise
    # What start-up built lives until the end; what it dropped goes back (agent/memory.py).
    await memory.settle(agent.db, agent.read_db)
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
