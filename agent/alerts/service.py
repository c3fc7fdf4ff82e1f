"""Alert use cases: raise once per incident, resolve, acknowledge, list; queue webhook messages.

May: decide whether a raise opens a new incident or updates the open one, and write the
messages the deliverer will send (through AlertRepo, in the same transaction). Must not: talk
to the network (agent.alerts.deliver does) or put a patient number in an alert: subjects are
pool names, our own numbers or "agent@<host>".
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from agent import phone
from agent.alerts.config import Webhook
from agent.alerts.repo import AlertRepo, Incident
from agent.clock import Clock
from agent.store import Database

log = logging.getLogger(__name__)

Severity = Literal["critical", "warning", "info"]

# Every kind the agent raises, with its default severity (the Prometheus rules mirror these).
KINDS: Mapping[str, Severity] = {
    "number_drift": "warning",
    "pool_drift": "critical",
    "reputation_flag": "warning",
    "number_quarantined": "warning",
    "number_rested": "info",
    "pool_below_min_active": "warning",
    "pool_exhausted": "critical",
    "reserve_empty": "critical",
    "fallback_used": "warning",
    "deadline_misses": "warning",
    "ami_down": "critical",
    "store_down": "critical",
    "keyring_missing": "critical",
}


class AlertService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        webhooks: Sequence[Webhook] = (),
        *,
        agent_name: str | None = None,
    ) -> None:
        self._repo = AlertRepo(db)
        # Alerts about this agent itself (AMI down, store down, ...) name it, so two hosts
        # sharing one store each open and resolve their own incident.
        self.agent_subject = agent_subject(agent_name)
        self._clock = clock
        self._webhooks = tuple(webhooks)
        self._pending: set[asyncio.Task[None]] = set()
        self.on_queued: list[Callable[[], None]] = []  # the deliverer's wake-up
        self.on_change: list[Callable[[str, Severity, bool], None]] = []  # kind, severity, open

    def set_webhooks(self, webhooks: Sequence[Webhook]) -> None:
        """On reload: new messages go to these; queued ones keep their webhook."""
        self._webhooks = tuple(webhooks)

    @property
    def webhooks(self) -> tuple[Webhook, ...]:
        return self._webhooks

    async def raise_(
        self,
        kind: str,
        subject: str,
        message: str,
        *,
        severity: Severity | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> tuple[Incident, bool]:
        """Open an incident, or update the open one of (kind, subject). Returns it and whether
        it is new: only a new incident is sent to the webhooks."""
        sev: Severity = severity or KINDS.get(kind, "warning")
        now = self._clock.now()
        payload = json.dumps({"message": message, **(details or {})}, sort_keys=True)
        key = f"tl-{uuid.uuid4().hex}"
        async with self._repo.db.transaction(lock=None):
            # One upsert, so two agents raising the same alert at once open one incident and
            # only the one that opened it queues the webhook message. Atomic statements: no
            # store-wide lock (an alert never waits for another agent's unrelated work).
            incident, new = await self._repo.open_or_touch(kind, subject, sev, now, payload, key)
            if not new:
                return incident, False
            await self._queue(incident, "raised", now)
        log.warning("alert %s (%s) %s: %s", kind, sev, _shown(subject), message)
        self._changed(kind, sev, True)
        return incident, True

    async def resolve(self, kind: str, subject: str, message: str = "cleared") -> bool:
        """Close the open incident of (kind, subject) and send a resolve message. False when
        none was open."""
        now = self._clock.now()
        async with self._repo.db.transaction(lock=None):
            found = await self._repo.resolve_open(kind, subject, now)
            if found is None:
                return False  # none open, or another agent resolved it first
            resolved = dataclasses.replace(found, payload={**found.payload, "resolution": message})
            await self._queue(resolved, "resolved", now)
        log.info("alert %s resolved %s: %s", kind, _shown(subject), message)
        self._changed(kind, found.severity, False)  # type: ignore[arg-type]
        return True

    async def ack(self, incident_id: int) -> bool:
        return await self._repo.ack(incident_id, self._clock.now())

    async def incidents(self, *, open_only: bool = False) -> list[Incident]:
        return await self._repo.incidents(open_only=open_only)

    async def post(self, event: str, key: str, body: Mapping[str, Any]) -> None:
        """Queue any other message (the weekly report) to every webhook, once per key."""
        now = self._clock.now()
        text = json.dumps({"event": event, "idempotency_key": key, **body}, sort_keys=True)
        async with self._repo.db.transaction(lock=None):
            for hook in self._webhooks:
                await self._repo.enqueue(None, hook.url, event, key, text, now)
        self._wake()

    def raise_soon(self, kind: str, subject: str | None, message: str) -> None:
        """For synchronous hooks (the outbound service's on_alert): raise in a task."""
        task = asyncio.get_running_loop().create_task(self._raise_logged(kind, subject, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for raises started by raise_soon (on stop, and in tests)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _raise_logged(self, kind: str, subject: str | None, message: str) -> None:
        try:
            await self.raise_(kind, subject or self.agent_subject, message)
        except Exception:
            log.exception("alert %s could not be stored: %s", kind, message)

    async def _queue(self, incident: Incident, event: str, now: float) -> None:
        body = json.dumps(
            {"event": event, "alert": incident.as_dict(), "idempotency_key": _key(incident, event)},
            sort_keys=True,
        )
        for hook in self._webhooks:
            await self._repo.enqueue(incident.id, hook.url, event, _key(incident, event), body, now)
        if self._webhooks:
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        for wake in self.on_queued:
            wake()

    def _changed(self, kind: str, severity: Severity, is_open: bool) -> None:
        for listener in self.on_change:
            listener(kind, severity, is_open)


def agent_subject(name: str | None = None) -> str:
    """The subject of an alert about one agent: "agent@<host name>" unless named otherwise."""
    return f"agent@{name or socket.gethostname()}"


def _key(incident: Incident, event: str) -> str:
    return f"{incident.idempotency_key}:{event}"


def _shown(subject: str) -> str:
    """Our own numbers are not secrets, but logs show numbers masked all the same."""
    return phone.mask(subject) if subject.startswith("+") else subject
