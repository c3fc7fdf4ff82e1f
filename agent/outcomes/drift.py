"""Drift detection: is a number (or a whole pool) being labelled "spam likely"? Pure policy.

May: keep in-memory counters of recent call outcomes and return signals with their evidence.
Must not: read a clock (every outcome carries its own time), touch the store or the network,
or act on a signal (the outcomes service decides what an alert, a rest or a lookup means).

Each number runs a Bernoulli CUSUM (answered / not) against the rate of its pool peers: peers
call the same patients, so campaign effects cancel. Their calls over the last
``window_minutes`` span hours whose usual rates differ, so each peer call is weighed by the
pool's usual rate at its own local hour (the last ``BASELINE_DAYS`` days): the peers' rate for
this hour is this hour's usual rate times the peers' answers over what their hours predicted.
The alternative it is tuned for is a flagged number, whose answer rate falls to ``FLAG_RATIO``
of its peers'. A new pool, with no usual hours yet, compares a number with its peers' calls in
the same local hour. While the pool's own test is high or in alert, the numbers' tests wait: a
pool that falls as a whole is one incident, and when it starts or ends the numbers start
afresh. The pool as a whole runs the same test against its own rate at the same local hour
over the last ``BASELINE_DAYS`` days; it and the usual hour rates count only numbers not in
alert (a flagged number is its own incident). Answered calls shorter than
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

from agent.outcomes.drift_stats import (
    CLIP,
    SHORT_ANSWER_SECONDS,
    Cusum,
    Evidence,
    Tally,
)

OnDrift = Literal["alert", "rest", "quarantine"]
SignalKind = Literal["number_drift", "number_recovered", "pool_drift", "pool_recovered", "lookup"]

NUMBER_THRESHOLD = 9.25  # CUSUM decision limit for one number (log-likelihood units)
POOL_THRESHOLD = 14.0  # ... for a pool as a whole
SHORT_RATIO = 3.0  # a flagged number's short-answer share among its answers, vs its peers'
BASELINE_DAYS = 7
# Today's peers run like the pool's usual hours until their own calls say otherwise: the ratio
# (peers' answers / what their hours predicted) leans on 1 with the weight of this many calls.
# Shrinkage for a day-to-day spread of about 5% in a pool's level (n = (1 - p) / (p * 0.05^2)
# at p = 0.4). At 30 calls the ratio's own noise over a 2-hour window (some 9%) nearly doubled
# the false alerts of bench/reputation.py.
RATIO_PRIOR_CALLS = 500


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
class Signal:
    kind: SignalKind
    pool: str
    number: str | None  # None for a pool signal
    at: float
    on_drift: OnDrift
    evidence: Evidence


@dataclass(slots=True, eq=False)
class _NumberState:
    drift: Cusum = field(default_factory=lambda: Cusum(NUMBER_THRESHOLD))
    short: float = 0.0  # short-answer CUSUM (lookup only)
    short_asked: bool = False
    window: Tally = field(default_factory=Tally)
    # its calls counted in the pool's hours: local day, hour, calls, answered
    slot: list[int] = field(default_factory=lambda: [-1, -1, 0, 0])


@dataclass(slots=True)
class _PoolState:
    drift: Cusum = field(default_factory=lambda: Cusum(POOL_THRESHOLD))
    # (at, number, answered, short, the pool's usual rate at that call's hour)
    window: deque[tuple[float, str, bool, bool, float | None]] = field(default_factory=deque)
    tally: Tally = field(default_factory=Tally)
    numbers: dict[str, _NumberState] = field(default_factory=dict)
    alerted: list[_NumberState] = field(default_factory=list)
    # (local day ordinal, local hour) -> [calls, answered] of its numbers not in alert
    hours: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    baseline_key: tuple[int, int] = (-1, -1)
    baseline: float | None = None


def _signal(
    kind: SignalKind, o: Outcome, number: str | None, tun: DriftTunables, cusum: Cusum
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
        # A number in alert is its own incident: the pool's test and its usual hour rates
        # count the numbers not in alert.
        healthy = not number.drift.alerted
        # A pool-wide fall is the pool's incident, not each number's: while the pool's own
        # statistic is high or it is in alert, its numbers' tests wait (peers still at the old
        # level would make every number look flagged, peers fallen with it would hide one).
        if not pool.drift.alerted and pool.drift.stat < POOL_THRESHOLD / 2:
            self._number_test(pool, number, outcome, short, tun, signals)
        if healthy:
            self._pool_test(pool, outcome, short, tun, signals)
        if signals and signals[-1].kind in ("pool_drift", "pool_recovered"):
            self._restart_peers(pool)
        if healthy:
            counts[0] += 1
            counts[1] += outcome.answered
            slot = number.slot
            if (slot[0], slot[1]) != pool.baseline_key:
                slot[:] = [*pool.baseline_key, 0, 0]
            slot[2] += 1
            slot[3] += outcome.answered
        pool.window.append((outcome.at, outcome.number, outcome.answered, short, pool.baseline))
        pool.tally.add(outcome.answered, short, pool.baseline)
        number.window.add(outcome.answered, short, pool.baseline)
        return signals

    def forget(self, pool: str, number: str | None = None) -> None:
        """Start afresh (a number rested, quarantined or reinstated; a pool replaced)."""
        state = self._pools.get(pool)
        if state is None:
            return
        if number is None:
            state.drift = Cusum(POOL_THRESHOLD)
        elif number in state.numbers:
            found = state.numbers[number]
            found.drift, found.short = Cusum(NUMBER_THRESHOLD), 0.0
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
        peers = pool.tally.minus(number.window)
        for other in pool.alerted:
            if other is not number:
                peers = peers.minus(other.window)
        peer_rate = self._peer_rate(pool, number, peers, tun)
        if peer_rate is None:
            return
        cusum = number.drift
        cusum.step(o.at, o.answered, short, peer_rate)
        if o.answered:
            share = (peers.short + 1) / (peers.answered + 2)
            share = min(max(share, CLIP[0]), 1.0 / (SHORT_RATIO + 0.1))
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

    @staticmethod
    def _peer_rate(
        pool: _PoolState, number: _NumberState, peers: Tally, tun: DriftTunables
    ) -> float | None:
        """What the number should answer at now, by its peers: None while too few to say.

        Peers' calls in the window span hours whose usual rates differ (the lunch hour is not
        the evening), so their raw rate is not this hour's. Each peer call is weighed by the
        pool's usual rate at its own hour: the peers' answers over the answers their hours
        predicted is how today runs against the usual (a campaign, a holiday), and this hour's
        usual rate times that ratio is the peers' rate at this hour. The ratio leans on 1 with
        the weight of ``RATIO_PRIOR_CALLS`` calls.
        """
        usual = pool.baseline
        if usual is None:  # no usual rates yet (a new pool): the peers' calls this hour
            calls, answered = pool.hours.get(pool.baseline_key, (0, 0))
            if (number.slot[0], number.slot[1]) == pool.baseline_key:
                calls, answered = calls - number.slot[2], answered - number.slot[3]
            return answered / calls if calls >= tun.min_calls else None
        prior = RATIO_PRIOR_CALLS * usual
        return usual * (peers.profiled_answered + prior) / (peers.expected + prior)

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
    def _restart_peers(pool: _PoolState) -> None:
        """The pool fell or came back: peers' calls from before do not describe it now, and
        what the numbers' tests gathered since its onset is the pool's, not theirs."""
        pool.window.clear()
        pool.tally = Tally()
        for state in pool.numbers.values():
            state.window = Tally()
            if not state.drift.alerted:
                state.drift = Cusum(NUMBER_THRESHOLD)

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
            _at, num, answered, short, hour_rate = window.popleft()
            pool.tally.add(answered, short, hour_rate, -1)
            pool.numbers[num].window.add(answered, short, hour_rate, -1)
