"""The supervised AMI link: connect, log in, keep alive, reconnect, re-sync, apply effects.

May: own one AmiClient at a time, retry with exponential backoff and jitter, write AstDB
fallbacks (DBPut/DBDel), store call outcomes, hand spam reports to the outbound service and
finished recordings to the recordings hand-off. Must not: decide policy (quarantine is the
outbound service's rule), block the event reader (effects go through a bounded queue to one
worker, so a slow store never makes Asterisk drop us for not reading), or log a secret or a
full phone number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent import phone
from agent.ami.client import AmiActionError, AmiAuthError, AmiClient, AmiError, AmiLinkDead
from agent.ami.protocol import Message
from agent.clock import Clock
from agent.contract import ASTDB_FALLBACK_PREFIX, ASTDB_FAMILY
from agent.errors import ConfigError
from agent.outcomes.calls import (
    CallEnded,
    CallTracker,
    CdrSeen,
    Effect,
    RecordingComplete,
    SpamReported,
)
from agent.outcomes.repo import OutcomeRepo
from agent.settings import Settings
from agent.store import Database

log = logging.getLogger(__name__)

FALLBACK_FAMILY = f"{ASTDB_FAMILY}/{ASTDB_FALLBACK_PREFIX}"
# AstDB key (family "trustline") listing the purposes we wrote, so stale keys can be deleted
# on any Asterisk version (DBGetTree is recent) and across agent restarts.
FALLBACK_INDEX_KEY = "fallback-purposes"
# Event classes we ask for at login (the manager user's read= bounds them anyway):
# call (DialEnd, Hangup), dialplan (VarSet), cdr (Cdr), user (UserEvent SpamReport).
LOGIN_EVENTS = "call,dialplan,cdr,user"
_PURPOSE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

# Tries for an outcome whose audit row is not written yet (0.5 s, 1 s, 1.5 s, 2 s later).
_LATE_ROW_ATTEMPTS = 4

RecordingHandler = Callable[[str, str], Awaitable[None]]
# (ended at, pool, number used, outcome, talk seconds) of a call we placed, once stored.
CallEndedListener = Callable[[float, str | None, str | None, str, int], Awaitable[None]]


def backoff_delay(attempt: int, initial: float, maximum: float, draw: float) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential up to
    ``maximum``, scaled by a jitter in [50 %, 100 %] from ``draw`` in [0, 1), so agents
    restarted together do not hammer Asterisk in step."""
    ceiling = min(maximum, initial * 2.0 ** min(attempt, 30))
    return ceiling * (0.5 + draw / 2)


class OutboundPort(Protocol):
    """What the link needs from the outbound service."""

    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> object: ...

    def fallbacks(self) -> dict[str, str]: ...


class _LinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge("trustline_ami_up", "1 while the AMI link is logged in", registry=registry)
        self.logins = Counter("trustline_ami_logins", "Successful AMI logins", registry=registry)
        self.failures = Counter(
            "trustline_ami_failures", "AMI link failures by kind", ["kind"], registry=registry
        )
        self.events = Counter("trustline_ami_events", "AMI events received", registry=registry)
        self.dropped = Counter(
            "trustline_ami_effects_dropped",
            "Call/recording/report effects dropped because the work queue was full",
            registry=registry,
        )
        # Answer rate per pool: answered / dialled outcomes over any window, in PromQL
        # (dialled: not cancelled, not_dialled or unknown; see agent.outcomes.repo). A call that
        # ended in a gap counts "unknown", then its outcome too if a late Cdr tells it.
        self.outcomes = Counter(
            "trustline_call_outcomes",
            "Outcomes of calls we chose a caller ID for, by pool",
            ["pool", "outcome"],
            registry=registry,
        )
        self.reports = Counter(
            "trustline_spam_reports_ami",
            "Spam reports received over AMI",
            ["source"],
            registry=registry,
        )
        self.tracked = Gauge(
            "trustline_ami_calls_tracked", "Our calls in progress seen over AMI", registry=registry
        )


class AmiLink:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        clock: Clock,
        outbound: OutboundPort,
        on_recording_complete: RecordingHandler,
        registry: CollectorRegistry | None = None,
        *,
        ping_interval: float = 10.0,
        pong_within: float = 5.0,
        action_timeout: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 30.0,
        lookback_seconds: float = 6 * 3600.0,
        queue_size: int = 10_000,
        late_row_delay: float = 0.5,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._outbound = outbound
        self._on_recording = on_recording_complete
        self._repo = OutcomeRepo(db)
        # Features that learn from each stored outcome (drift detection), in order.
        self.on_call_ended: list[CallEndedListener] = []
        # Features that want every UserEvent (compliance: OptOut), as a plain dict.
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
        # (effect, attempt): an outcome may beat its audit row to the store, see _apply.
        self._queue: asyncio.Queue[tuple[Effect, int]] = asyncio.Queue(maxsize=queue_size)
        self._late_row_delay = late_row_delay
        self._retries: set[asyncio.TimerHandle] = set()
        self._client: AmiClient | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
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
        self._worker = asyncio.create_task(self._work(), name="ami-effects")
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-link")

    async def stop(self, deadline: float = 5.0) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for handle in self._retries:
            handle.cancel()
        self._retries.clear()
        if self._worker is not None:
            # Let effects already received reach the store, within the deadline.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await self._queue.join()
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
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
        """Wait until every effect received so far has been applied (tests, shutdown)."""
        await self._queue.join()

    # -- supervision -----------------------------------------------------------------------

    def _read_secret(self) -> str:
        if self._settings.ami_secret is not None:
            return self._settings.ami_secret.get_secret_value()
        assert self._settings.ami_secret_file is not None
        # Read at every attempt, so a rotated secret file is picked up without a restart.
        return self._settings.ami_secret_file.read_text(encoding="utf-8").strip()

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, self._backoff_initial, self._backoff_max, random.random())

    async def _supervise(self) -> None:
        loop = asyncio.get_running_loop()
        host, port, user = self._settings.ami_host, self._settings.ami_port, self._settings.ami_user
        assert user is not None
        while True:
            client = AmiClient(
                host,
                port,
                on_event=self._on_event,
                action_timeout=self._action_timeout,
                connect_timeout=self._action_timeout,
                login_timeout=max(self._action_timeout, 3.0),
                # A healthy link carries at least a Pong per interval; silence past this is death.
                idle_timeout=self._ping_interval * 2 + self._pong_within,
            )
            up_since: float | None = None
            self.attempts += 1
            try:
                try:
                    secret = self._read_secret()
                except OSError as exc:
                    raise AmiAuthError(
                        f"cannot read TRUSTLINE_AMI_SECRET_FILE: {exc.strerror}"
                    ) from None
                await client.connect(
                    user, secret, md5=self._settings.ami_md5_challenge, events=LOGIN_EVENTS
                )
                up_since = loop.time()
                self.sessions += 1
                self._metrics.logins.inc()
                self._client = client
                self._detail = (
                    f"AMI up: {client.peer} as {user!r}, Asterisk Call Manager/{client.version}"
                )
                self._metrics.up.set(1)
                await self._resync(client)
                await client.heartbeat(self._ping_interval, self._pong_within)
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
            if up_since is not None and loop.time() - up_since >= self._stable_after:
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
            wanted = {
                p: n for p, n in self._outbound.fallbacks().items() if set(p) <= _PURPOSE_CHARS
            }
            previous = await self._astdb_index(client)
            # The index first lists old and new, so a crash midway still knows what to delete.
            await self._db_put(
                client, ASTDB_FAMILY, FALLBACK_INDEX_KEY, ",".join(sorted(previous | set(wanted)))
            )
            for purpose, number in sorted(wanted.items()):
                await self._db_put(client, FALLBACK_FAMILY, purpose, number)
            for purpose in sorted(previous - set(wanted)):
                # A key already gone is fine: DBDel answers Error and we move on.
                await client.action("DBDel", {"Family": FALLBACK_FAMILY, "Key": purpose})
            await self._db_put(client, ASTDB_FAMILY, FALLBACK_INDEX_KEY, ",".join(sorted(wanted)))
            log.info(
                "ami: AstDB fallbacks written for %d purposes, %d stale removed",
                len(wanted),
                len(previous - set(wanted)),
            )

    @staticmethod
    async def _astdb_index(client: AmiClient) -> set[str]:
        answer = await client.action("DBGet", {"Family": ASTDB_FAMILY, "Key": FALLBACK_INDEX_KEY})
        if not answer.ok:
            return set()  # "Database entry not found": first run on this PBX
        values = [e.get("Val", "") for e in answer.events if e.get("Event") == "DBGetResponse"]
        return {p for p in (values[0] if values else "").split(",") if p}

    @staticmethod
    async def _db_put(client: AmiClient, family: str, key: str, value: str) -> None:
        answer = await client.action("DBPut", {"Family": family, "Key": key, "Val": value})
        if not answer.ok:
            raise AmiActionError(f"DBPut {family}/{key}: {answer.message or 'refused'}")

    async def _resync_calls(self, client: AmiClient) -> None:
        # The store first, then the channel list: events flow while we wait on either, so a
        # call must be tracked before we ask Asterisk, or its Hangup read meanwhile would be
        # ignored and the call, listed live a moment before, tracked for good.
        now = self._clock.now()
        waiting = await self._repo.awaiting_outcome(now - self._lookback, now)
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
            self._enqueue(effect)
        log.info(
            "ami: re-synced: %d channels live, %d of our calls in progress, %d ended unseen",
            len(live),
            self._tracker.calls_in_progress,
            sum(isinstance(e, CallEnded) for e in ended),
        )
        self.resyncs += 1

    # -- events and effects ----------------------------------------------------------------

    def _on_event(self, event: Message) -> None:
        self.events_seen += 1
        self._metrics.events.inc()
        if event.get("Event") == "UserEvent":
            for listener in self.on_user_event:
                task = asyncio.ensure_future(listener(dict(event)))
                self._user_event_tasks.add(task)
                task.add_done_callback(self._user_event_tasks.discard)
        for effect in self._tracker.feed(event, self._clock.now()):
            self._enqueue(effect)

    def _enqueue(self, effect: Effect, attempt: int = 0) -> None:
        if attempt == 0 and isinstance(effect, CallEnded):
            self.calls_ended += 1
        try:
            self._queue.put_nowait((effect, attempt))
        except asyncio.QueueFull:
            self._metrics.dropped.inc()
            log.warning("ami: work queue full, dropped %s", type(effect).__name__)

    async def _work(self) -> None:
        while True:
            effect, attempt = await self._queue.get()
            try:
                if not await self._apply(effect):
                    if attempt < _LATE_ROW_ATTEMPTS:
                        self._retry_later(effect, attempt + 1)
                    else:
                        log.debug("ami: no audit row for %s: not ours", type(effect).__name__)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("ami: could not apply %s", type(effect).__name__)
            finally:
                self._queue.task_done()

    def _retry_later(self, effect: Effect, attempt: int) -> None:
        def again() -> None:
            self._retries.discard(handle)
            self._enqueue(effect, attempt)

        handle = asyncio.get_running_loop().call_later(self._late_row_delay * attempt, again)
        self._retries.add(handle)

    async def _apply(self, effect: Effect) -> bool:
        """Apply one effect; False when its call_audit row is not there (yet).

        The outbound service writes audit rows behind its answers, in batches: a call that is
        busy a few milliseconds after the AGI (ami-busy.jsonl: 7 ms) can end before its row
        lands, so an outcome without a row is retried a few times before it is let go.
        """
        if isinstance(effect, CallEnded):
            stored_end = await self._repo.record_end(effect)
            if stored_end is None:
                return False
            pool, number, _decided_at = stored_end
            for listener in self.on_call_ended:
                try:
                    await listener(
                        effect.ended_at,
                        pool or None,
                        number,
                        effect.outcome,
                        effect.talk_seconds or 0,
                    )
                except Exception:
                    log.exception("ami: a call-ended listener failed")
            self._metrics.outcomes.labels(pool or "-", effect.outcome).inc()
            log.info(
                "ami: call %s ended: %s (%s s talk)",
                effect.uniqueid,
                effect.outcome,
                "?" if effect.talk_seconds is None else effect.talk_seconds,
            )
        elif isinstance(effect, CdrSeen):
            stored = await self._repo.record_cdr(effect)
            if stored is None:
                return False
            pool, outcome = stored
            if effect.settles is not None and outcome == effect.settles:
                # A call that ended in a gap as "unknown": its late Cdr tells how it went.
                self._metrics.outcomes.labels(pool or "-", effect.settles).inc()
                log.info("ami: call %s ended: %s (late Cdr)", effect.uniqueid, effect.settles)
        elif isinstance(effect, RecordingComplete):
            log.info("ami: recording of %s complete", effect.uniqueid)
            await self._on_recording(effect.uniqueid, effect.filename)
        elif isinstance(effect, SpamReported):
            self._metrics.reports.labels(effect.source).inc()
            log.info("ami: spam report from %s for %s", effect.source, phone.mask(effect.number))
            # Every agent logged in to this PBX gets the same UserEvent: its Uniqueid makes
            # it one report in the shared store.
            await self._outbound.report_spam(
                effect.number, effect.source, event_id=effect.uniqueid or None
            )
        return True
