"""The supervised AMI link: connect, log in, keep alive, reconnect, re-sync, decode events.

May: own one AmiClient at a time, retry with exponential backoff and jitter, run the AstDB
actions its ``astdb`` collaborator plans (DBGet / DBPut / DBDel), feed every event to the call
tracker and hand each decoded fact to its ``handler`` (agent.outcomes.intake), and each
UserEvent to the features app.py registers in ``on_user_event``. Must not: act
on a fact itself (store, count outcomes, report spam), decide what AstDB holds, block the
event reader (``handler.submit`` never waits), or log a secret or a full phone number.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.ami.client import AmiActionError, AmiAuthError, AmiClient, AmiError, AmiLinkDead
from agent.ami.protocol import Message
from agent.clock import Clock
from agent.errors import ConfigError
from agent.outcomes.calls import CallEnded, CallTracker, Effect
from agent.settings import Settings
from agent.tasks import stop_task

log = logging.getLogger(__name__)

# Event classes we ask for at login (the manager user's read= bounds them anyway):
# call (DialEnd, Hangup), dialplan (VarSet), cdr (Cdr), user (UserEvent SpamReport, ...).
LOGIN_EVENTS = "call,dialplan,cdr,user"


def backoff_delay(attempt: int, initial: float, maximum: float, draw: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential up to
    ``maximum``, scaled by a jitter in [50 %, 100 %] from ``draw`` in [0, 1), so agents
    restarted together do not hammer Asterisk in step."""
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 30))
    return ceiling * (0.5 + draw / 2)


class EffectHandler(Protocol):
    """Where decoded facts go (agent.outcomes.intake.OutcomeIntake)."""

    def start(self) -> None: ...

    async def stop(self, deadline: float) -> None: ...

    async def flush(self) -> None: ...

    def submit(self, effect: Effect) -> None: ...

    async def awaiting_outcome(self, since: float, until: float) -> Sequence[tuple[str, str]]: ...


class AstDbAction(Protocol):
    """One AMI action on AstDB (DBPut / DBDel); ``required``: a refusal fails the sync."""

    @property
    def name(self) -> str: ...

    @property
    def family(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def required(self) -> bool: ...

    def fields(self) -> dict[str, str]: ...


class AstDbPlan(Protocol):
    @property
    def actions(self) -> Sequence[AstDbAction]: ...

    @property
    def summary(self) -> str: ...


class AstDbSync(Protocol):
    """What AstDB must hold (agent.outbound.astdb.FallbackSync): the key to read first
    (family, key), then the actions for what it held."""

    @property
    def index(self) -> tuple[str, str]: ...

    def plan(self, index_value: str | None) -> AstDbPlan: ...


class _LinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("trustline_ami_up", "1 while the AMI link is logged in", registry=registry)
        self.logins = Counter("trustline_ami_logins", "Successful AMI logins", registry=registry)
        self.failures = Counter(
            "trustline_ami_failures", "AMI link failures by kind", ["kind"], registry=registry
        )
        self.events = Counter("trustline_ami_events", "AMI events received", registry=registry)
        self.tracked = Gauge(
            "trustline_ami_calls_tracked", "Our calls in progress seen over AMI", registry=registry
        )


class AmiLink:
    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        handler: EffectHandler,
        astdb: AstDbSync,
        registry: CollectorRegistry | None = None,
        *,
        ping_interval: float = 10.0,
        pong_within: float = 5.0,
        action_timeout: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 30.0,
        lookback_seconds: float = 6 * 3600.0,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._handler = handler
        self._astdb = astdb
        # Features that want every UserEvent as it came (compliance: OptOut), registered by
        # app.py; each gets its own task, so none holds up the event reader.
        self.on_user_event: list[Callable[[dict[str, str]], Awaitable[object]]] = []
        self._user_event_tasks: set[asyncio.Future[object]] = set()
        self._tracker = CallTracker()
        self._metrics = _LinkMetrics(registry if registry is not None else CollectorRegistry())
        self._metrics.tracked.set_function(lambda: self._tracker.calls_in_progress)
        self._ping_interval = ping_interval
        self._pong_within = pong_within
        self._action_timeout = action_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._stable_after = stable_after
        self._lookback = lookback_seconds
        self._client: AmiClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._up_since: float | None = None  # loop time of the current session's login
        self._sync_lock = asyncio.Lock()
        self._detail = "AMI not started"
        self.attempts = 0  # connection attempts since the last stable session
        self.sessions = 0  # successful logins since start
        self.resyncs = 0  # completed re-syncs (AstDB + in-flight calls) since start
        self.events_seen = 0
        self.calls_ended = 0  # our calls seen ending (Hangup or re-sync), before the store

    @property
    def enabled(self) -> bool:
        return bool(self._settings.ami_user)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            self._detail = "AMI disabled: TRUSTLINE_AMI_USER is not set"
            log.info("ami: %s", self._detail)
            return
        if self._settings.ami_secret is None and self._settings.ami_secret_file is None:
            raise ConfigError(
                "environment",
                ["TRUSTLINE_AMI_SECRET or _SECRET_FILE: required when TRUSTLINE_AMI_USER is set"],
            )
        self._detail = "AMI connecting"
        self._handler.start()
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-link")

    async def stop(self, deadline: float = 5.0) -> None:
        await stop_task(self._supervisor)
        self._supervisor = None
        # Facts already decoded reach the store, within the deadline.
        await self._handler.stop(deadline)
        self._metrics.up.set(0)
        if self.enabled:
            self._detail = "AMI stopped"

    def status(self) -> tuple[bool, str]:
        """For /readyz: (healthy, detail). Without a user, AMI is off by choice: healthy."""
        if not self.enabled:
            return True, self._detail
        return self._client is not None, self._detail

    async def config_changed(self) -> None:
        """Re-write the AstDB fallbacks now; when down, the next login does it anyway."""
        client = self._client
        if client is None:
            return
        try:
            await self._sync_fallbacks(client)
        except AmiError as exc:
            log.error("ami: fallback caller IDs not written to AstDB after reload: %s", exc)

    async def flush(self) -> None:
        """Wait until every fact decoded so far has been acted on (tests, shutdown)."""
        await self._handler.flush()

    # -- supervision -----------------------------------------------------------------------

    def _read_secret(self) -> str:
        if self._settings.ami_secret is not None:
            return self._settings.ami_secret.get_secret_value()
        assert self._settings.ami_secret_file is not None
        # Read at every attempt, so a rotated secret file is picked up without a restart.
        return self._settings.ami_secret_file.read_text(encoding="utf-8").strip()

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._backoff_initial, self._backoff_max, random.random())

    def _new_client(self) -> AmiClient:
        return AmiClient(
            self._settings.ami_host,
            self._settings.ami_port,
            on_event=self._on_event,
            action_timeout=self._action_timeout,
            connect_timeout=self._action_timeout,
            login_timeout=max(self._action_timeout, 3.0),
            # A healthy link carries at least a Pong per interval; silence past this is death.
            idle_timeout=self._ping_interval * 2 + self._pong_within,
        )

    async def _serve(self, client: AmiClient, user: str) -> None:
        """Log in, re-sync, then keep the session alive until it fails (the heartbeat raises);
        sets ``self._up_since`` (loop time) once logged in."""
        try:
            secret = self._read_secret()
        except OSError as exc:
            raise AmiAuthError(f"cannot read TRUSTLINE_AMI_SECRET_FILE: {exc.strerror}") from None
        await client.connect(
            user, secret, md5=self._settings.ami_md5_challenge, events=LOGIN_EVENTS
        )
        self._up_since = asyncio.get_running_loop().time()
        self.sessions += 1
        self._metrics.logins.inc()
        self._client = client
        self._detail = f"AMI up: {client.peer} as {user!r}, Asterisk Call Manager/{client.version}"
        self._metrics.up.set(1)
        await self._resync(client)
        await client.heartbeat(self._ping_interval, self._pong_within)

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        host, port, user = self._settings.ami_host, self._settings.ami_port, self._settings.ami_user
        assert user is not None
        while True:
            client = self._new_client()
            self._up_since = None
            self.attempts += 1
            try:
                await self._serve(client, user)
            except AmiAuthError as exc:
                self._metrics.failures.labels("auth").inc()
                self._detail = f"AMI down: {exc}"
                log.error("ami: %s (check TRUSTLINE_AMI_USER / secret and manager.conf)", exc)
            except AmiError as exc:
                kind = "dead" if isinstance(exc, AmiLinkDead) else "connection"
                self._metrics.failures.labels(kind).inc()
                self._detail = f"AMI down: {exc}"
                log.warning("ami: %s", exc)
            except Exception as exc:
                # A store failure during the re-sync, or a bug: never let the supervisor die,
                # or the link would stay down for good. Logged with its traceback, retried.
                self._metrics.failures.labels("error").inc()
                self._detail = f"AMI down: unexpected {type(exc).__name__} (see the log)"
                log.exception("ami: link failed; will reconnect")
            finally:
                self._client = None
                self._metrics.up.set(0)
                await client.close(logoff=False)
            if self._up_since is not None and loop.time() - self._up_since >= self._stable_after:
                self.attempts = 1
            delay = self._backoff(self.attempts - 1)
            self._detail += f"; retry in {delay:.2f} s"
            log.info("ami: reconnecting to %s:%s in %.2f s", host, port, delay)
            await asyncio.sleep(delay)

    async def _resync(self, client: AmiClient) -> None:
        """After every login: fresh AstDB fallbacks, and close calls that ended unseen."""
        try:
            await self._sync_fallbacks(client)
        except AmiActionError as exc:
            # The link still serves outcomes and reports; say what is missing, loudly.
            self._detail += f"; AstDB fallbacks not written: {exc}"
            log.error("ami: AstDB fallbacks not written (manager user needs write=system): %s", exc)
        await self._resync_calls(client)

    async def _sync_fallbacks(self, client: AmiClient) -> None:
        async with self._sync_lock:
            family, key = self._astdb.index
            answer = await client.action("DBGet", {"Family": family, "Key": key})
            values = [e.get("Val", "") for e in answer.events if e.get("Event") == "DBGetResponse"]
            # Not ok: "Database entry not found", the first run on this PBX.
            plan = self._astdb.plan((values[0] if values else "") if answer.ok else None)
            for action in plan.actions:
                await self._run(client, action)
            log.info("ami: %s", plan.summary)

    @staticmethod
    async def _run(client: AmiClient, action: AstDbAction) -> None:
        answer = await client.action(action.name, action.fields())
        if action.required and not answer.ok:
            raise AmiActionError(
                f"{action.name} {action.family}/{action.key}: {answer.message or 'refused'}"
            )

    async def _resync_calls(self, client: AmiClient) -> None:
        # The store first, then the channel list: events flow while we wait on either, so a
        # call must be tracked before we ask Asterisk, or its Hangup read meanwhile would be
        # ignored and the call, listed live a moment before, tracked for good.
        now = self._clock.now()
        waiting = await self._handler.awaiting_outcome(now - self._lookback, now)
        adopted = self._tracker.adopt(waiting, now)
        answer = await client.action("CoreShowChannels")
        if not answer.ok:
            self._tracker.release(adopted)
            log.error(
                "ami: CoreShowChannels refused (%s): in-flight calls not re-synced", answer.message
            )
            return
        live = {e["Uniqueid"]: e.get("Linkedid", "") for e in answer.events if e.get("Uniqueid")}
        ended = self._tracker.resync(live, self._clock.now())
        for effect in ended:
            self._submit(effect)
        log.info(
            "ami: re-synced: %d channels live, %d of our calls in progress, %d ended unseen",
            len(live),
            self._tracker.calls_in_progress,
            sum(isinstance(e, CallEnded) for e in ended),
        )
        self.resyncs += 1

    # -- events and facts ------------------------------------------------------------------

    def _on_event(self, event: Message) -> None:
        self.events_seen += 1
        self._metrics.events.inc()
        if event.get("Event") == "UserEvent":
            for listener in self.on_user_event:
                task = asyncio.ensure_future(listener(dict(event)))
                self._user_event_tasks.add(task)
                task.add_done_callback(self._user_event_tasks.discard)
        for effect in self._tracker.feed(event, self._clock.now()):
            self._submit(effect)

    def _submit(self, effect: Effect) -> None:
        if isinstance(effect, CallEnded):
            self.calls_ended += 1
        self._handler.submit(effect)
