"""Prometheus metrics: one registry per agent, passed to whoever records (no global registry).

Feature modules define their own metrics on ``Metrics.registry``. Must not import any feature,
adapter or service (it sits below all of them, and the HTTP app imports only this): what it
records arrives through the small shapes below (``DecisionFacts``, ``AnswerFacts``) and plain
callables, which the services' own types satisfy without knowing this module.
"""

from __future__ import annotations

import asyncio
import re
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Label values are code words (statuses, reasons, route names): lower-case, short, no digits
# run long enough to be a phone number.
_LABEL = re.compile(r"(?!.*[0-9]{4})[a-z][a-z0-9_:]{0,39}")
MAX_LABEL_VALUES = 64
PAGE_SECONDS = 1.0


class DecisionFacts(Protocol):
    """An outbound decision as metrics see it (agent.outbound.service.Decision)."""

    @property
    def status(self) -> str: ...

    @property
    def reason(self) -> str: ...


class AnswerFacts(Protocol):
    """A FastAGI answer as metrics see it (agent.agi.routing.AgiAnswer)."""

    @property
    def outcome(self) -> str: ...


class _UsableNumbers(Collector):
    """Reads a snapshot taken on the event loop: the page itself is built on a thread, and the
    service's state must only be read from the loop."""

    def __init__(self, source: Callable[[], dict[str, int]]) -> None:
        self.source = source
        self.snapshot: dict[str, int] = {}

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(
            "trustline_pool_usable_numbers",
            "Numbers that can be handed out now, per pool",
            labels=["pool"],
        )
        for pool, count in sorted(self.snapshot.items()):
            family.add_metric([pool], count)
        yield family


class _Latency(Collector):
    """trustline_agi_decision_seconds, a histogram by route, counted on the event loop in plain
    lists (prometheus_client's Histogram takes a lock per bucket and per sum on every call);
    the page is built from a copy taken on the loop (``take_snapshot``)."""

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

    def __init__(self) -> None:
        # route -> [sessions in each bucket (not cumulative)..., beyond the last, sum of seconds]
        self.live: dict[str, list[float]] = {}
        self.snapshot: dict[str, list[float]] = {}

    def observe(self, route: str, seconds: float) -> None:
        counts = self.live.get(route)
        if counts is None:
            counts = self.live[route] = [0.0] * (len(self.BUCKETS) + 2)
        counts[bisect_left(self.BUCKETS, seconds)] += 1  # the first bucket with le >= seconds
        counts[-1] += seconds

    def take_snapshot(self) -> None:
        self.snapshot = {route: list(counts) for route, counts in self.live.items()}

    def collect(self):  # type: ignore[no-untyped-def]
        family = HistogramMetricFamily(
            "trustline_agi_decision_seconds",
            "Time from request headers to answer, by route",
            labels=["route"],
        )
        bounds = [*map(floatToGoString, self.BUCKETS), "+Inf"]
        for route, counts in sorted(self.snapshot.items()):
            total, buckets = 0.0, []
            for bound, count in zip(bounds, counts[:-1], strict=True):
                total += count
                buckets.append((bound, total))
            family.add_metric([route], buckets, counts[-1])
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
        self.shed = Counter(
            "trustline_agi_overload",
            "FastAGI requests answered with the fallback at once: too many in flight, or late",
            ["route"],
            registry=self.registry,
        )
        self.deadline_misses = Counter(
            "trustline_agi_deadline_misses",
            "FastAGI requests answered with the fallback after the deadline",
            ["route"],
            registry=self.registry,
        )
        self.latency = _Latency()
        self.registry.register(self.latency)
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
        self._decision_children = {}
        self._counted = {}
        self._label_values = {}
        self._usable = []
        self._rendering = None
        self._page = None
        self.config_loaded = Gauge(
            "trustline_config_last_reload_success",
            "1 when the last config reload succeeded",
            registry=self.registry,
        )

    _answer_children: dict[tuple[str, str], tuple[Counter, str]]
    _decision_children: dict[tuple[str, str], Counter]
    _counted: dict[Counter, int]  # per-call increments not yet added to their counter
    _label_values: dict[str, set[str]]
    _usable: list[_UsableNumbers]
    _rendering: asyncio.Future[bytes] | None
    _page: tuple[float, bytes] | None

    def watch_usable(self, source: Callable[[], dict[str, int]]) -> None:
        self._usable.append(_UsableNumbers(source))
        self.registry.register(self._usable[-1])

    def on_decision(self, decision: DecisionFacts) -> None:
        key = (decision.status, decision.reason)
        child = self._decision_children.get(key)
        if child is None:
            if len(self._decision_children) >= 4 * MAX_LABEL_VALUES:
                self._decision_children.clear()  # stays bounded whatever the values
            child = self._decision_children[key] = self.decisions.labels(
                self._bounded("status", decision.status), self._bounded("reason", decision.reason)
            )
        self._counted[child] = self._counted.get(child, 0) + 1

    def _bounded(self, kind: str, value: str) -> str:
        """A label value from a small fixed vocabulary: anything else is ``other``, and at
        most ``MAX_LABEL_VALUES`` distinct values per kind ever make a series."""
        if not _LABEL.fullmatch(value):
            return "other"
        seen = self._label_values.setdefault(kind, set())
        if value not in seen:
            if len(seen) >= MAX_LABEL_VALUES:
                return "other"
            seen.add(value)
        return value

    def on_alert(self, kind: str, pool: str | None, message: str) -> None:
        self.alerts.labels(kind).inc()

    def on_answer(self, route: str, answer: AnswerFacts, seconds: float, failure: str) -> None:
        """``route`` is a served route's name or ``unknown`` (never a name as the peer sent it)."""
        # On every call: look label children up once (labels() takes a lock and builds a key),
        # by the values as given; they are bounded once, when first seen. Counts are added up
        # here and handed to their counters when a page is built (inc() takes a lock).
        raw = (route, answer.outcome)
        children = self._answer_children.get(raw)
        if children is None:
            if len(self._answer_children) >= 4 * MAX_LABEL_VALUES:
                self._answer_children.clear()  # stays bounded whatever the values
            route = self._bounded("route", route)
            key = (route, self._bounded("outcome", answer.outcome or "none"))
            children = self._answer_children[raw] = (self.agi_sessions.labels(*key), route)
        else:
            route = children[1]
        counter = children[0]
        self._counted[counter] = self._counted.get(counter, 0) + 1
        self.latency.observe(route, seconds)
        if failure == "deadline":
            self.deadline_misses.labels(route).inc()
        elif failure == "overload":
            self.shed.labels(route).inc()

    def render(self) -> bytes:
        """The page, built here (tests, CLI). The HTTP view uses ``render_async``."""
        self._snapshot()
        return generate_latest(self.registry)

    async def render_async(self) -> bytes:
        """The page, built on a thread so a large page never holds up a call. Requests that
        arrive while one is being built share it, and a page is reused for ``PAGE_SECONDS``
        (scrapes come every 15 s or so; a flood of requests costs one build a second)."""
        now = time.monotonic()
        if self._page is not None and now - self._page[0] < PAGE_SECONDS:
            return self._page[1]
        if self._rendering is None:
            self._snapshot()  # on the loop: the services' state is not thread-safe
            self._rendering = asyncio.ensure_future(
                asyncio.to_thread(generate_latest, self.registry)
            )
            self._rendering.add_done_callback(self._rendered)
        return await asyncio.shield(self._rendering)

    def _rendered(self, future: asyncio.Future[bytes]) -> None:
        self._rendering = None
        if not future.cancelled() and future.exception() is None:
            self._page = (time.monotonic(), future.result())

    def _snapshot(self) -> None:
        counted, self._counted = self._counted, {}
        for counter, count in counted.items():
            counter.inc(count)
        self.latency.take_snapshot()
        for collector in self._usable:
            collector.snapshot = collector.source()
