"""Acts on the facts the AMI link decodes: stores call outcomes, counts them, hands spam
reports to the outbound service, finished recordings to the recordings hand-off, and counts
screening outcomes and calls the dialplan did not dial.

May: own the bounded work queue and its one worker, retry an outcome whose call_audit row is
not written yet, tell the call-ended listeners (drift) about each stored outcome, define the
outcome metrics. Must not: block the caller of ``submit`` (the AMI event reader: a slow store
must never make Asterisk drop us for not reading), decide policy (quarantine is the outbound
service's rule), or log a full phone number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from agent import phone
from agent.outcomes.calls import (
    CallEnded,
    CdrSeen,
    Effect,
    NotDialled,
    RecordingComplete,
    ScreeningOutcome,
    SpamReported,
)
from agent.outcomes.repo import OutcomeRepo
from agent.store import Database

log = logging.getLogger(__name__)

# Tries for an outcome whose audit row is not written yet (0.5 s, 1 s, 1.5 s, 2 s later).
_LATE_ROW_ATTEMPTS = 4

RecordingHandler = Callable[[str, str], Awaitable[None]]
# (ended at, pool, number used, outcome, talk seconds) of a call we placed, once stored.
CallEndedListener = Callable[[float, str | None, str | None, str, int], Awaitable[None]]


class SpamReports(Protocol):
    """What the intake needs from the outbound service."""

    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> object: ...


class _IntakeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
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
        self.screened = Counter(
            "trustline_screening_outcomes",
            "What became of screened inbound calls (dialplan UserEvent), by verdict and outcome",
            ["verdict", "outcome"],
            registry=registry,
        )
        self.not_dialled = Counter(
            "trustline_calls_not_dialled",
            "Calls the dialplan did not dial on a compliance refusal (UserEvent), by status",
            ["status"],
            registry=registry,
        )


class OutcomeIntake:
    """The handler the AMI link hands each decoded fact to (``submit``), and the store's
    word on which calls still await an outcome (``awaiting_outcome``, for a re-sync)."""

    def __init__(
        self,
        db: Database,
        outbound: SpamReports,
        on_recording_complete: RecordingHandler,
        registry: CollectorRegistry | None = None,
        *,
        queue_size: int = 10_000,
        late_row_delay: float = 0.5,
    ) -> None:
        self._repo = OutcomeRepo(db)
        self._outbound = outbound
        self._on_recording = on_recording_complete
        self._metrics = _IntakeMetrics(registry if registry is not None else CollectorRegistry())
        # Features that learn from each stored outcome (drift detection), in order.
        self.on_call_ended: list[CallEndedListener] = []
        # (effect, attempt): an outcome may beat its audit row to the store, see _apply.
        self._queue: asyncio.Queue[tuple[Effect, int]] = asyncio.Queue(maxsize=queue_size)
        self._late_row_delay = late_row_delay
        self._retries: set[asyncio.TimerHandle] = set()
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="ami-effects")

    async def stop(self, deadline: float = 5.0) -> None:
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

    async def flush(self) -> None:
        """Wait until every effect received so far has been applied (tests, shutdown)."""
        await self._queue.join()

    async def awaiting_outcome(self, since: float, until: float) -> list[tuple[str, str]]:
        """(uniqueid, linkedid) of our calls decided in [since, until] with no outcome yet."""
        return await self._repo.awaiting_outcome(since, until)

    def submit(self, effect: Effect, attempt: int = 0) -> None:
        """Queue one fact; never waits (a full queue drops it, counted and logged)."""
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
            self.submit(effect, attempt)

        handle = asyncio.get_running_loop().call_later(self._late_row_delay * attempt, again)
        self._retries.add(handle)

    async def _apply(self, effect: Effect) -> bool:
        """Apply one effect; False when its call_audit row is not there (yet).

        The outbound service writes audit rows behind its answers, in batches: a call that is
        busy a few milliseconds after the AGI (ami-busy.jsonl: 7 ms) can end before its row
        lands, so an outcome without a row is retried a few times before it is let go.
        """
        if isinstance(effect, CallEnded):
            return await self._call_ended(effect)
        if isinstance(effect, CdrSeen):
            stored = await self._repo.record_cdr(effect)
            if stored is None:
                return False
            pool, _outcome, settled = stored
            if settled and effect.settles is not None:
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
        elif isinstance(effect, ScreeningOutcome):
            self._metrics.screened.labels(effect.verdict, effect.outcome).inc()
        elif isinstance(effect, NotDialled):
            self._metrics.not_dialled.labels(effect.status).inc()
        return True

    async def _call_ended(self, effect: CallEnded) -> bool:
        stored_end = await self._repo.record_end(effect)
        if stored_end is None:
            return False
        pool, number, _decided_at = stored_end
        for listener in self.on_call_ended:
            try:
                await listener(
                    effect.ended_at, pool or None, number, effect.outcome, effect.talk_seconds or 0
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
        return True
