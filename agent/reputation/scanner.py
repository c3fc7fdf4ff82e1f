"""Reputation scanning: every own number looked up on a schedule, and at once on demand.

May: pace lookups within the provider's rate limit (and its Retry-After), keep every answer
(ReputationRepo), raise and resolve ``reputation_flag`` alerts, hand a newly flagged number to
the pool's ``on_flag`` action. Must not: let a provider's failure reach a caller (``request``
never blocks, ``tick`` never raises), or touch calls: a stalled provider only delays scans.

Scheduled checks are spread evenly over ``scan_minutes``; a failed lookup is retried after
10 s, doubling up to a minute (one number, well within any rate limit), so a flaky provider
delays an answer by minutes, not by a scan period. On-demand requests (drift's half-threshold
signal, a CLI) go before scheduled ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Protocol

from agent import phone
from agent.alerts.service import AlertService
from agent.clock import Clock
from agent.outcomes.config import OnFlag
from agent.reputation.providers import ProviderError, ReputationProvider, Verdict
from agent.reputation.repo import Check, ReputationRepo
from agent.store import Database
from agent.tasks import stop_task

log = logging.getLogger(__name__)

RETRY_BASE = 10.0
RETRY_CAP = 60.0
FlagAction = Callable[[str, str, OnFlag], Awaitable[None]]  # number, pool, policy


class PoolOf(Mapping[str, str]):
    """number -> pool, read from the config's numbers rather than copied (100,000 of them)."""

    def __init__(self, numbers: Mapping[str, _HasPool]) -> None:
        self._numbers = numbers

    def __getitem__(self, number: str) -> str:
        return self._numbers[number].pool

    def __contains__(self, number: object) -> bool:
        return number in self._numbers

    def __iter__(self) -> Iterator[str]:
        return iter(self._numbers)

    def __len__(self) -> int:
        return len(self._numbers)


class _HasPool(Protocol):
    @property
    def pool(self) -> str: ...


class ReputationScanner:
    def __init__(self, db: Database, clock: Clock, alerts: AlertService) -> None:
        self._repo = ReputationRepo(db)
        self._clock = clock
        self._alerts = alerts
        self._provider: ReputationProvider | None = None
        self._period = 3600.0
        self._interval = 2.0  # seconds between two requests (the rate limit)
        self._numbers: Mapping[str, str] = {}  # number -> pool
        self._policy: dict[str, OnFlag] = {}  # pool -> on_flag
        self._next: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._wanted: dict[str, str] = {}  # number -> why (insertion ordered)
        self._flagged: set[str] = set()
        self._not_before = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_flag: list[FlagAction] = []

    def configure(
        self,
        numbers: Mapping[str, str],
        policy: Mapping[str, OnFlag],
        provider: ReputationProvider | None,
        *,
        scan_minutes: float = 60.0,
        requests_per_minute: float = 30.0,
    ) -> None:
        """On start and on every reload: the numbers to watch (number -> pool, kept as given:
        not copied, 100,000 of them), each pool's on_flag, the provider. A number new to the
        scanner is scheduled within the coming period; without a provider nothing is."""
        self._provider = provider
        self._period = scan_minutes * 60.0
        self._interval = 60.0 / requests_per_minute
        self._numbers = numbers
        self._policy = dict(policy)
        now = self._clock.now()
        if provider is None:  # no lookups: no schedule (a provider added later starts one)
            self._next.clear()
            self._failures.clear()
        fresh = [n for n in sorted(numbers) if n not in self._next] if provider else []
        for i, number in enumerate(fresh):
            self._next[number] = now + self._period * i / max(1, len(fresh))
        for gone in [n for n in (*self._next, *self._wanted) if n not in numbers]:
            self._next.pop(gone, None)
            self._failures.pop(gone, None)
            self._wanted.pop(gone, None)
        self._wake.set()

    async def load(self) -> None:
        """After a restart: resume each number's schedule from its last stored answer."""
        for number, check in (await self._repo.latest()).items():
            if check.flagged:
                self._flagged.add(number)
            if number in self._next and check.source == self._source():
                self._next[number] = max(self._next[number], check.checked_at + self._period)

    def request(self, number: str, why: str) -> None:
        """Look this number up as soon as the rate limit allows (never blocks)."""
        if number in self._numbers and number not in self._wanted:
            self._wanted[number] = why
            self._wake.set()

    async def tick(self, limit: int = 50) -> float:
        """Do the lookups due now (at most ``limit``); seconds until more are due."""
        for _ in range(limit):
            if self._provider is None:
                return self._period
            now = self._clock.now()
            if now < self._not_before:
                break
            number = self._due(now)
            if number is None:
                break
            await self._check(self._provider, number, now)
        return self._wait()

    async def record(self, verdicts: list[Verdict], source: str) -> tuple[int, int]:
        """Keep answers from a vendor list (or a provider); returns (ours, not ours)."""
        now = self._clock.now()
        ours = [v for v in verdicts if v.number in self._numbers]
        others = len(verdicts) - len(ours)
        await self._repo.add(
            [Check(v.number, now, source, v.score, v.label, v.flagged) for v in ours]
        )
        for verdict in ours:
            await self._apply(verdict, source)
        return len(ours), others

    async def start(self) -> None:
        await self.load()
        self._task = asyncio.create_task(self._run(), name="reputation-scanner")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._provider is not None:
            await self._provider.close()

    # -- inside ----------------------------------------------------------------------------
    def _source(self) -> str:
        return self._provider.name if self._provider is not None else "-"

    def _due(self, now: float) -> str | None:
        for number in self._wanted:
            if self._next.get(number, 0.0) <= now or not self._failures.get(number):
                return number
        if not self._next:
            return None
        number = min(self._next, key=self._next.__getitem__)
        return number if self._next[number] <= now else None

    def _wait(self) -> float:
        now = self._clock.now()
        soonest = min(self._next.values(), default=now + self._period)
        for number in self._wanted:
            soonest = min(
                soonest, self._next.get(number, now) if self._failures.get(number) else now
            )
        return max(0.0, max(soonest, self._not_before) - now)

    async def _check(self, provider: ReputationProvider, number: str, now: float) -> None:
        self._not_before = now + self._interval
        why = self._wanted.pop(number, None)
        try:
            verdict = await provider.lookup(number)
        except ProviderError as exc:
            self._failed(number, str(exc), exc.retry_after, why)
            return
        except Exception as exc:  # a provider bug must not stop the scanner
            log.exception("reputation: lookup of %s failed", phone.mask(number))
            self._failed(number, type(exc).__name__, None, why)
            return
        self._failures.pop(number, None)
        self._next[number] = self._clock.now() + self._period
        try:
            await self.record([verdict], provider.name)
        except Exception:
            log.exception("reputation: could not keep the answer for %s", phone.mask(number))
            self._next[number] = self._clock.now() + RETRY_BASE

    def _failed(self, number: str, error: str, retry_after: float | None, why: str | None) -> None:
        now = self._clock.now()
        failures = self._failures[number] = self._failures.get(number, 0) + 1
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** (failures - 1))
        if retry_after is not None:
            # The provider asked everyone to wait: hold every lookup, not just this one.
            self._not_before = max(self._not_before, now + min(retry_after, 3600.0))
            delay = max(delay, min(retry_after, 3600.0))
        self._next[number] = now + delay
        if why is not None:
            self._wanted[number] = why  # still wanted: first in line once it is due again
        log.warning("reputation: %s; retry in %.0f s", error, delay)

    async def _apply(self, verdict: Verdict, source: str) -> None:
        number, pool = verdict.number, self._numbers.get(verdict.number, "-")
        if verdict.flagged:
            details = {"score": verdict.score, "label": verdict.label, "source": source}
            message = f"{source} flags {phone.mask(number)} ({verdict.label or verdict.score})"
            _incident, new = await self._alerts.raise_(
                "reputation_flag", number, message, details={**details, "pool": pool}
            )
            self._flagged.add(number)
            if new:
                policy = self._policy.get(pool, "alert")
                for action in self.on_flag:
                    try:
                        await action(number, pool, policy)
                    except Exception:
                        log.exception("reputation: on_flag %s failed for %s", policy, pool)
        elif number in self._flagged:
            self._flagged.discard(number)
            await self._alerts.resolve("reputation_flag", number, f"{source} no longer flags it")

    async def _run(self) -> None:
        while True:
            try:
                wait = await self.tick()
            except Exception:
                log.exception("reputation: scan round failed")
                wait = RETRY_BASE
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(wait, 60.0))
