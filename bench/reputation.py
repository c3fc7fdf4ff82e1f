"""How fast does drift detection catch a flagged number or pool, and how often does it cry wolf?

Simulates pool-months (default 20): a pool of 20 numbers at 80 calls a day each, calls placed at
random times between 10:00 and 20:00, base answer rate 35-50% by hour of day (drawn per
pool-month) with +-10% noise per call. In each month 3 numbers are flagged at random times
(their answer rate falls to a quarter, until the month ends) and once the whole pool is flagged
(for one day). The real ``DriftDetector`` runs on that stream with the clock the stream carries.
Time to detect counts minutes within calling hours. An oracle CUSUM that knows each hour's true
base rate runs on the same stream, its threshold chosen so that it raises no more false alerts
on single numbers than the detector did: its delays are the statistical limit.

    .venv/bin/python bench/reputation.py [--months 20] [--seed 11]
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from agent.outcomes.drift import DriftDetector, DriftTunables, Outcome
from agent.outcomes.drift_stats import FLAG_RATIO

NUMBERS = 20
CALLS_PER_DAY = 80
DAYS = 30
OPEN_H, CLOSE_H = 10, 20
DAY = 86400.0
UTC = ZoneInfo("UTC")
TUNABLES = DriftTunables(timezone=UTC)
GRID = [x / 4 for x in range(8, 81)]  # oracle thresholds 2.0 .. 20.0


def calling_minutes(t0: float, t1: float) -> float:
    """Minutes of calling hours between two instants (the stream starts at epoch day 0)."""
    total = 0.0
    day = math.floor(t0 / DAY)
    while day * DAY <= t1:
        start, end = day * DAY + OPEN_H * 3600, day * DAY + CLOSE_H * 3600
        total += max(0.0, min(end, t1) - max(start, t0))
        day += 1
    return total / 60.0


def random_call_time(rng: random.Random, first_day: int, last_day: int) -> float:
    day = rng.randrange(first_day, last_day)
    return day * DAY + rng.uniform(OPEN_H * 3600, CLOSE_H * 3600)


@dataclass
class Oracle:
    """CUSUMs with the true base rate, evaluated for every threshold on GRID at once."""

    stat: dict[str, float] = field(default_factory=dict)
    peak: dict[str, float] = field(default_factory=dict)
    false_peaks: list[float] = field(default_factory=list)
    # number -> (flagged at, {threshold: first crossing time})
    episodes: dict[str, tuple[float, dict[float, float]]] = field(default_factory=dict)

    def step(
        self, number: str, at: float, answered: bool, p0: float, flagged_at: float | None
    ) -> None:
        llr = math.log(FLAG_RATIO) if answered else math.log((1 - FLAG_RATIO * p0) / (1 - p0))
        s = max(0.0, self.stat.get(number, 0.0) + llr)
        self.stat[number] = s
        if flagged_at is None:
            peak = max(self.peak.get(number, 0.0), s)
            if s == 0.0:
                if peak > 0.0:
                    self.false_peaks.append(peak)
                peak = 0.0
            self.peak[number] = peak
            return
        _, crossings = self.episodes.setdefault(number, (flagged_at, {}))
        for h in GRID:
            if s < h:
                break
            crossings.setdefault(h, at)

    def reset(self, number: str) -> None:
        """A period that is neither healthy nor this number's episode (the pool is flagged)."""
        self.stat[number] = 0.0
        self.peak[number] = 0.0

    def close(self) -> None:
        self.false_peaks.extend(p for p in self.peak.values() if p > 0.0)
        self.peak.clear()


@dataclass
class Results:
    single_delays: list[float] = field(default_factory=list)
    pool_delays: list[float] = field(default_factory=list)
    false_single: int = 0
    false_pool: int = 0
    number_days: int = 0
    oracle_false_peaks: list[float] = field(default_factory=list)
    oracle_episodes: list[tuple[float, float, dict[float, float]]] = field(default_factory=list)


def pool_month(rng: random.Random, month: int, out: Results) -> None:
    base = {h: rng.uniform(0.35, 0.50) for h in range(OPEN_H, CLOSE_H)}
    numbers = [f"+3314200{month:02d}{i:03d}" for i in range(NUMBERS)]
    pool_flag = random_call_time(rng, 8, DAYS - 6)
    pool_end = pool_flag + DAY
    flags: dict[str, float] = {}
    while len(flags) < 3:
        number, at = rng.choice(numbers), random_call_time(rng, 7, DAYS - 5)
        if number not in flags and not pool_flag - 2 * DAY <= at <= pool_end + DAY:
            flags[number] = at
    month_end = DAYS * DAY

    detector = DriftDetector(lambda _pool: TUNABLES)
    oracle = Oracle()
    caught: dict[str, float] = {}
    pool_caught: float | None = None
    for day in range(DAYS):
        calls = sorted(
            (random_call_time(rng, day, day + 1), number)
            for number in numbers
            for _ in range(CALLS_PER_DAY)
        )
        for at, number in calls:
            hour = int((at % DAY) // 3600)
            in_pool_flag = pool_flag <= at < pool_end
            flagged_at = flags.get(number)
            flagged = in_pool_flag or (flagged_at is not None and at >= flagged_at)
            p = base[hour] * (1 + rng.uniform(-0.1, 0.1)) * (FLAG_RATIO if flagged else 1.0)
            answered = rng.random() < p
            talk = rng.randint(30, 300) if answered else 0
            for signal in detector.observe(Outcome(at, "p", number, answered, talk)):
                if signal.kind == "number_drift":
                    assert signal.number is not None
                    if flagged_at is not None and at >= flagged_at:
                        caught.setdefault(signal.number, at)
                    elif not in_pool_flag:
                        out.false_single += 1
                elif signal.kind == "pool_drift":
                    if in_pool_flag:
                        pool_caught = pool_caught or at
                    else:
                        out.false_pool += 1
            if in_pool_flag:
                oracle.reset(number)
            else:
                own = flagged_at if flagged_at is not None and at >= flagged_at else None
                oracle.step(number, at, answered, base[hour], own)
    oracle.close()
    for number, at in flags.items():
        out.single_delays.append(calling_minutes(at, caught.get(number, month_end)))
        flagged_at, crossings = oracle.episodes.get(number, (at, {}))
        out.oracle_episodes.append((at, month_end, crossings))
    out.pool_delays.append(calling_minutes(pool_flag, pool_caught or pool_end))
    out.oracle_false_peaks.extend(oracle.false_peaks)
    out.number_days += NUMBERS * DAYS


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def oracle_limit(res: Results) -> tuple[float, float, float]:
    """(threshold, median, p90) of the oracle at no more single false alerts than ours."""
    peaks = sorted(res.oracle_false_peaks)
    for h in GRID:
        false = len(peaks) - bisect.bisect_left(peaks, h)
        if false <= res.false_single:
            delays = [
                calling_minutes(at, crossings.get(h, end))
                for at, end, crossings in res.oracle_episodes
            ]
            return h, statistics.median(delays), p90(delays)
    return math.inf, math.nan, math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=20, help="pool-months to simulate")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    res = Results()
    started = time.perf_counter()
    for month in range(args.months):
        pool_month(rng, month, res)
    elapsed = time.perf_counter() - started
    h, lm, lp = oracle_limit(res)
    median, p90_single = statistics.median(res.single_delays), p90(res.single_delays)
    pool_p90 = p90(res.pool_delays)
    false_rate = 1000 * (res.false_single + res.false_pool) / res.number_days
    print(
        f"{args.months} pool-months, {res.number_days} number-days,"
        f" {args.months * NUMBERS * CALLS_PER_DAY * DAYS} calls in {elapsed:.1f} s"
    )
    print(f"single delays (min): {sorted(round(d) for d in res.single_delays)}")
    print(f"pool delays (min): {sorted(round(d) for d in res.pool_delays)}")
    print(
        f"false alerts: {res.false_single} number, {res.false_pool} pool;"
        f" oracle threshold {h} at <= {res.false_single} false"
    )
    print(
        f"reputation: single median {median:.0f} min p90 {p90_single:.0f} min"
        f" (limit {lm:.0f}/{lp:.0f}), pool p90 {pool_p90:.0f} min,"
        f" false {false_rate:.2f} per 1000 number-days"
    )


if __name__ == "__main__":
    main()
