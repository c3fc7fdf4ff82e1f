"""Prometheus metrics: one registry per agent, passed to whoever records (no global registry).

Feature modules define their own metrics on ``Metrics.registry``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agent.agi.routing import AgiAnswer
from agent.services.outbound import Decision

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _UsableNumbers(Collector):
    def __init__(self, source: Callable[[], dict[str, int]]) -> None:
        self._source = source

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(
            "trustline_pool_usable_numbers",
            "Numbers that can be handed out now, per pool",
            labels=["pool"],
        )
        for pool, count in sorted(self._source().items()):
            family.add_metric([pool], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "trustline_outbound_decisions",
            "Outbound caller-ID decisions by status and reason",
            ["status", "reason"],
            registry=self.registry,
        )
        self.agi_sessions = Counter(
            "trustline_agi_sessions",
            "FastAGI sessions answered, by route and outcome",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.deadline_misses = Counter(
            "trustline_agi_deadline_misses",
            "FastAGI requests answered with the fallback after the deadline",
            ["route"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trustline_agi_decision_seconds",
            "Time from request headers to answer, by route",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.alerts = Counter(
            "trustline_alerts", "Alerts raised, by kind", ["kind"], registry=self.registry
        )
        self.config_reloads = Counter(
            "trustline_config_reloads",
            "Config reload attempts by result",
            ["result"],
            registry=self.registry,
        )
        self._answer_children = {}
        self.config_loaded = Gauge(
            "trustline_config_last_reload_success",
            "1 when the last config reload succeeded",
            registry=self.registry,
        )

    _answer_children: dict[tuple[str, str], tuple[Counter, Histogram]]

    def watch_usable(self, source: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_UsableNumbers(source))

    def on_decision(self, decision: Decision) -> None:
        self.decisions.labels(decision.status, decision.reason).inc()

    def on_alert(self, kind: str, pool: str | None, message: str) -> None:
        self.alerts.labels(kind).inc()

    def on_answer(self, route: str, answer: AgiAnswer, seconds: float, missed: bool) -> None:
        # On every call: look label children up once (labels() takes a lock and builds a key).
        key = (route, answer.outcome or "none")
        children = self._answer_children.get(key)
        if children is None:
            children = self._answer_children[key] = (
                self.agi_sessions.labels(*key),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)
        if missed:
            self.deadline_misses.labels(route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
