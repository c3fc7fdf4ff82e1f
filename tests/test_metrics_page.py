"""The per-call series on /metrics: sessions by route and outcome, the decision-time histogram
and decisions by status and reason, as Prometheus parses the page."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics


@dataclass(frozen=True)
class Answer:
    outcome: str


@dataclass(frozen=True)
class Decided:
    status: str
    reason: str


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    page = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def test_each_call_is_counted_once_in_its_bucket_across_pages() -> None:
    metrics = Metrics()
    for seconds in (0.0004, 0.001, 0.02):
        metrics.on_answer("outbound", Answer("ok"), seconds, "")
    metrics.on_decision(Decided("ok", "least_used"))
    first = samples(metrics)
    bucket = "trustline_agi_decision_seconds_bucket"
    out = (("route", "outbound"),)
    assert first[(bucket, (("le", "0.001"), *out))] == 2.0  # le: 1 ms itself is in it
    assert first[(bucket, (("le", "0.025"), *out))] == 3.0
    assert first[("trustline_agi_decision_seconds_count", out)] == 3.0
    assert abs(first[("trustline_agi_decision_seconds_sum", out)] - 0.0214) < 1e-9
    sessions = (("outcome", "ok"), ("route", "outbound"))
    assert first[("trustline_agi_sessions_total", sessions)] == 3.0
    decided = (("reason", "least_used"), ("status", "ok"))
    assert first[("trustline_outbound_decisions_total", decided)] == 1.0

    metrics.on_answer("outbound", Answer("fallback"), 0.3, "deadline")
    metrics.on_answer("outbound", Answer("ok"), 2.5, "")
    second = samples(metrics)  # counted once each, whatever the number of pages
    assert second[("trustline_agi_sessions_total", sessions)] == 4.0
    assert second[(bucket, (("le", "1.0"), *out))] == 4.0
    assert second[(bucket, (("le", "+Inf"), *out))] == 5.0
    assert second[("trustline_agi_decision_seconds_count", out)] == 5.0
    assert second[("trustline_agi_deadline_misses_total", (("route", "outbound"),))] == 1.0
    assert samples(metrics) == second
