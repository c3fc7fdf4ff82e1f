"""Prometheus series of the alert outbox and the open incidents, on the agent's registry.

May: count what the service and the deliverer report through their hooks. Must not: query
the store from a scrape (the open set is kept from the service's change events, seeded at
start by ``seed``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.alerts.repo import Incident


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "trustline_alerts_open",
            "Open alert incidents, by kind and severity",
            ["kind", "severity"],
            registry=registry,
        )
        self.raised = Counter(
            "trustline_alert_incidents",
            "Alert incidents opened, by kind",
            ["kind"],
            registry=registry,
        )
        self.deliveries = Counter(
            "trustline_alert_deliveries",
            "Webhook delivery attempts, by result (delivered, retry, gave_up)",
            ["result"],
            registry=registry,
        )

    def seed(self, incidents: list[Incident]) -> None:
        for incident in incidents:
            if incident.resolved_at is None:
                self.open.labels(incident.kind, incident.severity).inc()

    def on_change(self, kind: str, severity: str, is_open: bool) -> None:
        if is_open:
            self.raised.labels(kind).inc()
            self.open.labels(kind, severity).inc()
        else:
            self.open.labels(kind, severity).dec()

    def on_delivery(self, result: str) -> None:
        self.deliveries.labels(result).inc()
