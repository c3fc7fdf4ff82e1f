"""Drift detection: is a number (or a whole pool) being labelled "spam likely"? Pure policy.

May: keep in-memory counters of recent call outcomes and return signals with their evidence.
Must not: read a clock (every outcome carries its own time), touch the store or the network,
or act on a signal (the outcomes service decides what an alert, a rest or a lookup means).

Each number runs a Bernoulli CUSUM (answered / not) against the rate of its pool peers over the
last ``window_minutes``: peers call the same patients at the same hours, so time-of-day and
campaign effects cancel. The alternative it is tuned for is a flagged number, whose answer rate
falls to ``FLAG_RATIO`` of its peers'. The pool as a whole runs the same test against its own
rate at the same local hour over the last ``BASELINE_DAYS`` days. Answered calls shorter than
``SHORT_ANSWER_SECONDS`` (the patient picked up, saw the label, hung up) feed a second CUSUM;
it only asks for a reputation lookup. A number whose statistic passes half its threshold asks
for a lookup too: a weak signal buys a strong one. After an alert the reverse test runs, and a
``*_recovered`` signal says when the rate is back.

Thresholds are set by ``bench/reputation.py`` (false alerts <= 1 per 1000 number-days).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

OnDrift = Literal["alert", "rest", "quarantine"]
SignalKind = Literal["number_drift", "number_recovered", "pool_drift", "pool_recovered", "lookup"]

FLAG_RATIO = 0.25  # a flagged number answers at a quarter of its normal rate
NUMBER_THRESHOLD = 10.0  # CUSUM decision limit for one number (log-likelihood units)
POOL_THRESHOLD = 14.0  # ... for a pool as a whole
SHORT_ANSWER_SECONDS = 10
SHORT_RATIO = 3.0  # a flagged number's short-answer share among its answers, vs its peers'
BASELINE_DAYS = 7
_CLIP = (0.02, 0.98)
_LOG_FLAG = math.log(FLAG_RATIO)


@dataclass(frozen=True, slots=True)
class DriftTunables:
    """Per pool, from ``[defaults]`` / ``[pools.X]``."""

    timezone: ZoneInfo
    window_minutes: float = 120.0
    min_calls: int = 30
    on_drift: OnDrift = "alert"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One dialled call (its callee side is known): calls never dialled are not fed in."""

    at: float
    pool: str
    number: str
    answered: bool
    talk_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Evidence:
    calls: int  # since ``since``
    answered: int
    short_answered: int  # answered, talk < SHORT_ANSWER_SECONDS
    peer_rate: float  # what the number was compared with (mean over its calls)
    since: float  # epoch seconds: when the statistic last left zero
    statistic: float
    threshold: float

    def as_dict(self) -> dict[str, object]:
        return {
            "calls": self.calls,
            "answered": self.answered,
            "short_answered": self.short_answered,
            "peer_rate": round(self.peer_rate, 4),
            "since": self.since,
            "statistic": round(self.statistic, 3),
            "threshold": self.threshold,
        }


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    pool: str
    number: str | None  # None for a pool signal
    at: float
    on_drift: OnDrift
    evidence: Evidence


@dataclass(slots=True)
class _Cusum:
    """One excursion of a CUSUM, with what it saw since it left zero."""

    threshold: float
    stat: float = 0.0
    since: float = 0.0
    calls: int = 0
    answered: int = 0
    short: int = 0
    base_sum: float = 0.0
    alerted: bool = False
    recovery: float = 0.0
    asked_lookup: bool = False

    def step(self, at: float, answered: bool, short: bool, p0: float) -> float:
        p0 = min(max(p0, _CLIP[0]), _CLIP[1])
        llr = _LOG_FLAG if answered else math.log((1.0 - FLAG_RATIO * p0) / (1.0 - p0))
        if self.alerted:
            self.recovery = max(0.0, self.recovery - llr)
            return llr
        if self.stat <= 0.0:
            self.since, self.calls, self.answered, self.short, self.base_sum = at, 0, 0, 0, 0.0
            self.asked_lookup = False
        self.stat = max(0.0, self.stat + llr)
        self.calls += 1
        self.answered += answered
        self.short += short
        self.base_sum += p0
        return llr

    def evidence(self) -> Evidence:
        rate = self.base_sum / self.calls if self.calls else 0.0
        return Evidence(
            self.calls, self.answered, self.short, rate, self.since, self.stat, self.threshold
        )

    def alert(self) -> None:
        self.alerted, self.recovery = True, 0.0

    def recovered(self) -> None:
        self.alerted, self.stat, self.recovery = False, 0.0, 0.0


@dataclass(slots=True, eq=False)
class _NumberState:
    drift: _Cusum = field(default_factory=lambda: _Cusum(NUMBER_THRESHOLD))
    short: float = 0.0  # short-answer CUSUM (lookup only)
    short_asked: bool = False
    win_calls: int = 0
    win_answered: int = 0
    win_short: int = 0


@dataclass(slots=True)
class _PoolState:
    drift: _Cusum = field(default_factory=lambda: _Cusum(POOL_THRESHOLD))
    window: deque[tuple[float, str, bool, bool]] = field(default_factory=deque)
    win_calls: int = 0
    win_answered: int = 0
    win_short: int = 0
    numbers: dict[str, _NumberState] = field(default_factory=dict)
    alerted: list[_NumberState] = field(default_factory=list)
    # (local day ordinal, local hour) -> [calls, answered]
    hours: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    baseline_key: tuple[int, int] = (-1, -1)
    baseline: float | None = None


def _signal(
    kind: SignalKind, o: Outcome, number: str | None, tun: DriftTunables, cusum: _Cusum
) -> Signal:
    return Signal(kind, o.pool, number, o.at, tun.on_drift, cusum.evidence())


class DriftDetector:
    """Feeds on outcomes in time order; returns the signals each one raises.

    ``tunables`` maps a pool name to its tunables (read at every outcome, so a reload applies
    at once). State lives in memory: on start the service replays the last day of outcomes.
    """

    def __init__(self, tunables: Callable[[str], DriftTunables]) -> None:
        self._tunables = tunables
        self._pools: dict[str, _PoolState] = {}
        self._local: dict[tuple[str, int], tuple[int, int]] = {}

    def observe(self, outcome: Outcome) -> list[Signal]:
        tun = self._tunables(outcome.pool)
        pool = self._pools.get(outcome.pool)
        if pool is None:
            pool = self._pools[outcome.pool] = _PoolState()
        self._evict(pool, outcome.at - tun.window_minutes * 60.0)
        number = pool.numbers.get(outcome.number)
        if number is None:
            number = pool.numbers[outcome.number] = _NumberState()
        short = outcome.answered and outcome.talk_seconds < SHORT_ANSWER_SECONDS
        signals: list[Signal] = []
        counts = self._hour_counts(pool, outcome.at, tun)
        self._number_test(pool, number, outcome, short, tun, signals)
        self._pool_test(pool, outcome, short, tun, signals)
        counts[0] += 1
        counts[1] += outcome.answered
        pool.window.append((outcome.at, outcome.number, outcome.answered, short))
        pool.win_calls += 1
        pool.win_answered += outcome.answered
        pool.win_short += short
        number.win_calls += 1
        number.win_answered += outcome.answered
        number.win_short += short
        return signals

    def forget(self, pool: str, number: str | None = None) -> None:
        """Start afresh (a number rested, quarantined or reinstated; a pool replaced)."""
        state = self._pools.get(pool)
        if state is None:
            return
        if number is None:
            state.drift = _Cusum(POOL_THRESHOLD)
        elif number in state.numbers:
            found = state.numbers[number]
            found.drift, found.short = _Cusum(NUMBER_THRESHOLD), 0.0
            if found in state.alerted:
                state.alerted.remove(found)

    def statistic(self, pool: str, number: str | None = None) -> float:
        state = self._pools.get(pool)
        if state is None:
            return 0.0
        if number is None:
            return state.drift.stat
        found = state.numbers.get(number)
        return found.drift.stat if found is not None else 0.0

    # -- the two tests ---------------------------------------------------------------------
    def _number_test(
        self,
        pool: _PoolState,
        number: _NumberState,
        o: Outcome,
        short: bool,
        tun: DriftTunables,
        out: list[Signal],
    ) -> None:
        # Peers are the pool's other numbers, less those already in alert: a flagged number
        # would drag the rate it is compared with down, and hide the next one.
        peer_calls = pool.win_calls - number.win_calls
        peer_answered = pool.win_answered - number.win_answered
        peer_short = pool.win_short - number.win_short
        for other in pool.alerted:
            if other is not number:
                peer_calls -= other.win_calls
                peer_answered -= other.win_answered
                peer_short -= other.win_short
        # Few peer calls yet (the first minutes of the day): lean on the pool's usual rate at
        # this hour, worth ``min_calls`` calls, rather than skip the call or trust a handful.
        prior = pool.baseline
        if prior is not None:
            peer_rate = (peer_answered + tun.min_calls * prior) / (peer_calls + tun.min_calls)
        elif peer_calls >= tun.min_calls:
            peer_rate = peer_answered / peer_calls
        else:
            return
        cusum = number.drift
        cusum.step(o.at, o.answered, short, peer_rate)
        if o.answered:
            share = (peer_short + 1) / (peer_answered + 2)
            share = min(max(share, _CLIP[0]), 1.0 / (SHORT_RATIO + 0.1))
            step = (
                math.log(SHORT_RATIO)
                if short
                else math.log((1 - SHORT_RATIO * share) / (1 - share))
            )
            number.short = max(0.0, number.short + step)
            if number.short == 0.0:
                number.short_asked = False
        if cusum.alerted:
            if cusum.recovery >= cusum.threshold:
                cusum.recovered()
                pool.alerted.remove(number)
                out.append(_signal("number_recovered", o, o.number, tun, cusum))
            return
        if cusum.stat >= cusum.threshold:
            cusum.alert()
            pool.alerted.append(number)
            out.append(_signal("number_drift", o, o.number, tun, cusum))
        elif (not cusum.asked_lookup and cusum.stat >= cusum.threshold / 2) or (
            not number.short_asked and number.short >= NUMBER_THRESHOLD / 2
        ):
            cusum.asked_lookup = cusum.asked_lookup or cusum.stat >= cusum.threshold / 2
            number.short_asked = number.short_asked or number.short >= NUMBER_THRESHOLD / 2
            out.append(_signal("lookup", o, o.number, tun, cusum))

    def _hour_counts(self, pool: _PoolState, at: float, tun: DriftTunables) -> list[int]:
        """This local hour's [calls, answered] of the pool; refreshes the pool's baseline."""
        day, hour = self._local_hour(at, tun.timezone)
        counts = pool.hours.get((day, hour))
        if counts is None:
            counts = pool.hours[(day, hour)] = [0, 0]
            self._trim_hours(pool, day)
        if pool.baseline_key != (day, hour):
            pool.baseline_key = (day, hour)
            pool.baseline = self._baseline(pool, day, hour, tun.min_calls)
        return counts

    def _pool_test(
        self, pool: _PoolState, o: Outcome, short: bool, tun: DriftTunables, out: list[Signal]
    ) -> None:
        if pool.baseline is not None:
            cusum = pool.drift
            cusum.step(o.at, o.answered, short, pool.baseline)
            if cusum.alerted:
                if cusum.recovery >= cusum.threshold:
                    cusum.recovered()
                    out.append(_signal("pool_recovered", o, None, tun, cusum))
            elif cusum.stat >= cusum.threshold:
                cusum.alert()
                out.append(_signal("pool_drift", o, None, tun, cusum))

    @staticmethod
    def _baseline(pool: _PoolState, day: int, hour: int, min_calls: int) -> float | None:
        """The pool's rate at this local hour on the previous days; all hours if too few."""
        calls = answered = 0
        for back in range(1, BASELINE_DAYS + 1):
            c = pool.hours.get((day - back, hour))
            if c is not None:
                calls, answered = calls + c[0], answered + c[1]
        if calls >= min_calls:
            return answered / calls
        calls = answered = 0
        for (d, _h), c in pool.hours.items():
            if day - BASELINE_DAYS <= d < day:
                calls, answered = calls + c[0], answered + c[1]
        return answered / calls if calls >= min_calls else None

    @staticmethod
    def _trim_hours(pool: _PoolState, day: int) -> None:
        for key in [k for k in pool.hours if k[0] < day - BASELINE_DAYS]:
            del pool.hours[key]

    def _local_hour(self, at: float, tz: ZoneInfo) -> tuple[int, int]:
        # Every zone offset is a multiple of 15 minutes: cache per quarter hour.
        key = (tz.key, int(at // 900))
        found = self._local.get(key)
        if found is None:
            if len(self._local) > 4096:
                self._local.clear()
            local = datetime.fromtimestamp(at, tz)
            found = self._local[key] = (local.toordinal(), local.hour)
        return found

    @staticmethod
    def _evict(pool: _PoolState, before: float) -> None:
        window = pool.window
        while window and window[0][0] < before:
            _at, num, answered, short = window.popleft()
            pool.win_calls -= 1
            pool.win_answered -= answered
            pool.win_short -= short
            state = pool.numbers[num]
            state.win_calls -= 1
            state.win_answered -= answered
            state.win_short -= short
