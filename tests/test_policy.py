"""Pure outbound policy: no socket, no database."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from agent.config import parse_config
from agent.outbound.policy import NumberState, Selector, intensive_rest, plan_promotions, warmup_cap
from tests.conftest import PARIS

RULES = (
    parse_config("""
[defaults]
intensive_threshold = 60
intensive_days_before_rest = 3
rest_hours = 48
[pools.a]
purposes = ["x"]
numbers = [ { number = "+33142000001", name = "A" } ]
""")
    .pools["a"]
    .rules
)


def test_warmup_ramps_to_the_full_cap() -> None:
    promoted = date(2026, 11, 17)
    caps = [warmup_cap(80, promoted, date(2026, 11, 17 + d), 3) for d in range(5)]
    assert caps == [20, 40, 60, 80, 80]
    assert warmup_cap(80, None, date(2026, 11, 17), 3) == 80
    assert warmup_cap(1, promoted, promoted, 3) == 1


def test_rest_starts_at_the_next_local_midnight_for_rest_hours() -> None:
    now = datetime(2026, 11, 19, 15, 0, tzinfo=PARIS).timestamp()
    window = intensive_rest(60, [75, 60], RULES, now)
    assert window is not None
    start, end = (datetime.fromtimestamp(t, PARIS) for t in window)
    assert start == datetime(2026, 11, 20, 0, 0, tzinfo=PARIS)
    assert end == datetime(2026, 11, 22, 0, 0, tzinfo=PARIS)
    assert intensive_rest(60, [75, 59], RULES, now) is None  # a quiet day breaks the run
    assert intensive_rest(60, [75], RULES, now) is None  # not enough history
    assert intensive_rest(61, [75, 60], RULES, now) is None  # decided once, at the threshold


def _state(number: str, pool: str, **kw: Any) -> NumberState:
    return NumberState(number=number, home_pool=pool, name="n", full_cap=80, presence=None, **kw)


def test_promotion_fills_the_deficit_and_returns_when_healthy_again() -> None:
    pools = {"a": (False, 2), "r": (True, 0)}
    now = 1000.0
    states = [
        _state("+1", "a"),
        _state("+2", "a", quarantined_until=5000.0),
        _state("+r1", "r", last_used_at=10.0),
        _state("+r2", "r", last_used_at=5.0),
    ]
    assert plan_promotions(pools, states, now) == [("+r2", "a")]  # least recently used first
    states[3].serving_pool = "a"
    assert plan_promotions(pools, states, now) == []
    assert plan_promotions(pools, states, 6000.0) == [("+r2", None)]  # quarantine over


def test_selector_prefers_local_then_least_used_then_least_recent() -> None:
    sel = Selector()
    sel.put("+paris1", "a", "+33:1", used=5, last_used_at=100)
    sel.put("+paris2", "a", "+33:1", used=5, last_used_at=50)
    sel.put("+lyon", "a", "+33:4", used=0, last_used_at=0)
    assert sel.take("a", "+33:1") == "+paris2"  # local, same use, least recent
    assert sel.take("a", "+33:1") == "+paris1"
    assert sel.take("a", "+33:1") == "+lyon"  # no local left: the pool's least used
    assert sel.take("a", None) is None
    sel.put("+lyon", "a", "+33:4", used=1, last_used_at=200)
    sel.discard("+lyon")
    assert sel.take("a", "+33:4") is None


def test_selector_memory_stays_proportional_to_numbers_not_calls() -> None:
    sel = Selector()
    for i in range(3):
        sel.put(f"+n{i}", "a", "+33:1", used=0, last_used_at=0.0)
    # Every callee is local: the pool-wide heap is never popped, only compacted.
    for call in range(100_000):
        number = sel.take("a", "+33:1")
        assert number is not None
        sel.put(number, "a", "+33:1", used=call, last_used_at=float(call))
    assert max(sel.heap_sizes().values()) < 2_000


def test_selector_serves_a_hundred_thousand_numbers() -> None:
    sel = Selector()
    for i in range(100_000):
        sel.put(f"+n{i}", "a", f"+33:{i % 50}", used=i % 7, last_used_at=float(i))
    taken = [sel.take("a", "+33:3") for _ in range(10)]
    assert all(t is not None for t in taken)
    assert len(set(taken)) == 10


def test_selector_loaded_at_once_ranks_as_one_put_each() -> None:
    """A restart loads every number at once: calls then get the numbers in the same order as
    from a selector filled one number at a time (ties go to the number placed first)."""
    numbers = [
        (f"+n{i}", "ab"[i % 2], f"+33:{i % 3}" if i % 4 else None, i % 5, float(i % 7))
        for i in range(200)
    ]
    one_by_one, loaded = Selector(), Selector()
    for entry in numbers:
        one_by_one.put(*entry)
    loaded.load(numbers)
    assert loaded.count("a") == one_by_one.count("a") == 100
    for pool, presence in [("a", "+33:1"), ("b", None), ("a", None), ("b", "+33:2")] * 60:
        assert loaded.take(pool, presence) == one_by_one.take(pool, presence)


def test_selector_serving_a_large_pool_never_stops_to_rebuild_its_heaps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 numbers in 50 areas, calls served pool-wide (no local presence asked), each
    number back with one more use: the areas' heaps hold each number once or twice, and the
    whole-heap rebuild (a pause of every call in flight at 100,000 numbers) never runs."""
    rebuilds = []
    monkeypatch.setattr(Selector, "_compact", lambda self: rebuilds.append(1))
    sel = Selector()
    sel.load((f"+n{i}", "a", f"+33:{i % 50}", 0, 0.0) for i in range(20_000))
    for call in range(200_000):
        number = sel.take("a", None)
        assert number is not None
        sel.put(number, "a", f"+33:{int(number[2:]) % 50}", 1 + call // 20_000, float(call))
    assert rebuilds == []
    assert sum(sel.heap_sizes().values()) <= 2 * 2 * 20_000
    assert sel.take("a", "+33:7") == "+n7"  # the area's least used: 7 was served first
