"""Drift detection (pure policy): flagged numbers and pools are caught, with their evidence."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

from agent.outcomes.drift import (
    NUMBER_THRESHOLD,
    DriftDetector,
    DriftTunables,
    Outcome,
    Signal,
)

UTC = ZoneInfo("UTC")
DAY = 86400.0
NUMBERS = [f"+3314200{i:04d}" for i in range(20)]


def stream(
    rng: random.Random,
    days: range,
    rate: dict[str, float],
    *,
    talk: int = 60,
    pool: str = "reminders",
) -> list[Outcome]:
    """80 calls a day per number between 10:00 and 20:00, in time order."""
    calls = []
    for day in days:
        for number in NUMBERS:
            for _ in range(80):
                at = day * DAY + rng.uniform(10 * 3600, 20 * 3600)
                answered = rng.random() < rate.get(number, 0.42)
                calls.append(Outcome(at, pool, number, answered, talk if answered else 0))
    return sorted(calls, key=lambda o: o.at)


def run(detector: DriftDetector, outcomes: list[Outcome]) -> list[Signal]:
    return [s for o in outcomes for s in detector.observe(o)]


def detector(**tunables: object) -> DriftDetector:
    tun = DriftTunables(timezone=UTC, **tunables)  # type: ignore[arg-type]  # per-test field overrides
    return DriftDetector(lambda _pool: tun)


def test_a_healthy_pool_raises_at_most_one_false_alert_in_140_number_days() -> None:
    # The design rate is 1 per 1000 number-days (bench/reputation.py): 0.14 expected here.
    signals = run(detector(), stream(random.Random(1), range(7), {}))
    assert len([s for s in signals if s.kind in ("number_drift", "pool_drift")]) <= 1


def test_a_number_at_a_quarter_of_its_peers_rate_is_flagged_with_evidence() -> None:
    rng = random.Random(2)
    det = detector()
    assert not [s for s in run(det, stream(rng, range(2), {})) if s.kind != "lookup"]
    flagged = NUMBERS[3]
    signals = run(det, stream(rng, range(2, 4), {flagged: 0.42 / 4}))
    drift = [s for s in signals if s.kind == "number_drift"]
    assert [s.number for s in drift] == [flagged]
    evidence = drift[0].evidence
    assert evidence.statistic >= NUMBER_THRESHOLD
    assert 0.35 < evidence.peer_rate < 0.50
    assert evidence.answered / evidence.calls < 0.2
    assert 2 * DAY <= evidence.since < drift[0].at
    assert drift[0].on_drift == "alert"
    # A weak signal came first and asked for a reputation lookup of the same number.
    lookups = [s for s in signals if s.kind == "lookup" and s.number == flagged]
    assert lookups and lookups[0].at < drift[0].at


def test_a_whole_pool_collapsing_is_flagged_within_an_hour_of_calls() -> None:
    rng = random.Random(3)
    det = detector()
    run(det, stream(rng, range(3), {}))
    collapse = stream(rng, range(3, 4), dict.fromkeys(NUMBERS, 0.42 / 4))
    signals = run(det, collapse)
    pool = [s for s in signals if s.kind == "pool_drift"]
    assert len(pool) == 1 and pool[0].number is None
    assert pool[0].at - collapse[0].at < 3600
    # Every number fell with its peers: none is singled out.
    assert not [s for s in signals if s.kind == "number_drift"]


def test_a_number_back_to_its_peers_rate_recovers() -> None:
    rng = random.Random(4)
    det = detector(on_drift="rest")
    run(det, stream(rng, range(1), {}))
    signals = run(det, stream(rng, range(1, 3), {NUMBERS[0]: 0.1}))
    assert [s.kind for s in signals if s.number == NUMBERS[0] and s.kind != "lookup"] == [
        "number_drift"
    ]
    assert {s.on_drift for s in signals} == {"rest"}
    back = run(det, stream(rng, range(3, 5), {}))
    assert [s.kind for s in back if s.number == NUMBERS[0]] == ["number_recovered"]


def test_short_answers_ask_for_a_lookup_without_flagging() -> None:
    rng = random.Random(5)
    det = detector()
    run(det, stream(rng, range(1), {}))
    calls = stream(rng, range(1, 2), {})
    # Same answer rate, but one number's patients hang up within seconds.
    calls = [
        Outcome(
            o.at,
            o.pool,
            o.number,
            o.answered,
            3 if o.number == NUMBERS[7] and o.answered else o.talk_seconds,
        )
        for o in calls
    ]
    signals = run(det, calls)
    assert {s.kind for s in signals} == {"lookup"}
    asked = [s for s in signals if s.number == NUMBERS[7]]
    assert len(asked) == 1 and asked[0].evidence.short_answered > 0


def test_too_few_peer_calls_means_no_test() -> None:
    det = detector(min_calls=30)
    # One number alone in its pool: no peers to compare with, nothing raised however it does.
    outcomes = [Outcome(36000 + i * 60, "solo", "+33142000001", False) for i in range(200)]
    assert [s for s in run(det, outcomes) if s.kind != "pool_drift"] == []


def evening_stream(rng: random.Random, days: range, late_rate: float) -> list[Outcome]:
    """Patients answer 60% of calls before 15:00 and 25% after. Nineteen numbers call all day;
    NUMBERS[0] calls only from 15:00 to 16:00 and answers at ``late_rate``."""
    calls = []
    for day in days:
        for number in NUMBERS:
            late = number == NUMBERS[0]
            for _ in range(80):
                at = day * DAY + rng.uniform(
                    15 * 3600 if late else 10 * 3600, 16 * 3600 if late else 20 * 3600
                )
                rate = late_rate if late else (0.60 if at % DAY < 15 * 3600 else 0.25)
                answered = rng.random() < rate
                calls.append(Outcome(at, "reminders", number, answered, 60 if answered else 0))
    return sorted(calls, key=lambda o: o.at)


def test_a_number_calling_in_low_answer_hours_is_held_to_its_peers_in_those_hours() -> None:
    # Its peers answer 25% after 15:00, and so does it: not flagged, although their calls
    # of the two hours before (at 60%) are in the window it used to be compared with.
    det = detector()
    signals = run(det, evening_stream(random.Random(6), range(4), 0.25))
    assert [s for s in signals if s.kind == "number_drift"] == []


def test_a_number_calling_in_low_answer_hours_is_flagged_when_it_falls_below_its_peers() -> None:
    rng = random.Random(7)
    det = detector()
    assert not [s for s in run(det, evening_stream(rng, range(2), 0.25)) if s.kind != "lookup"]
    signals = run(det, evening_stream(rng, range(2, 4), 0.25 / 4))
    drift = [s for s in signals if s.kind == "number_drift"]
    assert [s.number for s in drift] == [NUMBERS[0]]
    # It was compared with what its peers answer at its hours, not over the whole day.
    assert 0.18 < drift[0].evidence.peer_rate < 0.32


def test_a_number_still_low_after_its_pool_came_back_is_flagged_alone() -> None:
    # A whole-pool fall is one incident; when the pool is back, the number that stayed low is
    # singled out against its recovered peers (the fallen day does not hide it).
    rng = random.Random(8)
    det = detector()
    run(det, stream(rng, range(3), {}))
    fell = run(det, stream(rng, range(3, 4), dict.fromkeys(NUMBERS, 0.42 / 4)))
    assert [s.kind for s in fell if s.kind.startswith("pool")] == ["pool_drift"]
    assert not [s for s in fell if s.kind == "number_drift"]
    after = run(det, stream(rng, range(4, 6), {NUMBERS[3]: 0.42 / 4}))
    assert [s.kind for s in after if s.kind.startswith("pool")] == ["pool_recovered"]
    assert [s.number for s in after if s.kind == "number_drift"] == [NUMBERS[3]]
