"""The statistics drift detection is built of: a Bernoulli CUSUM with its evidence, and the
tally of calls in a window. Pure: no clock, no I/O.

The CUSUM tests "answers at ``FLAG_RATIO`` of the reference rate" against "answers at the
reference rate", one call at a time; the reference rate is given with each call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FLAG_RATIO = 0.25  # a flagged number answers at a quarter of its normal rate
SHORT_ANSWER_SECONDS = 10
CLIP = (0.02, 0.98)
_LOG_FLAG = math.log(FLAG_RATIO)


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


@dataclass(slots=True)
class Cusum:
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
        p0 = min(max(p0, CLIP[0]), CLIP[1])
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


@dataclass(slots=True)
class Tally:
    """Calls in the window: counts, and the answers the pool's hour profile expected of them."""

    calls: int = 0
    answered: int = 0
    short: int = 0
    profiled: int = 0  # calls placed in an hour whose usual rate was known
    profiled_answered: int = 0
    expected: float = 0.0  # sum of those calls' usual hour rates

    def add(self, answered: bool, short: bool, hour_rate: float | None, sign: int = 1) -> None:
        self.calls += sign
        self.answered += sign * answered
        self.short += sign * short
        if hour_rate is not None:
            self.profiled += sign
            self.profiled_answered += sign * answered
            self.expected += sign * hour_rate

    def minus(self, other: Tally) -> Tally:
        return Tally(
            self.calls - other.calls,
            self.answered - other.answered,
            self.short - other.short,
            self.profiled - other.profiled,
            self.profiled_answered - other.profiled_answered,
            self.expected - other.expected,
        )
