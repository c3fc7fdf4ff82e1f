"""The webhook deliverer: posts queued alert messages, signed, until each gets a 2xx.

May: read due rows from the outbox, POST them, record the result, sleep until the next is due.
Must not: decide what to send (the service queued it) or drop a message before it is
acknowledged or ``retry_hours`` have passed. At least once: a message acknowledged by the
receiver just before a crash may be sent again, with the same ``Idempotency-Key`` header and
body, so the receiver can tell. Each request carries ``X-Trustline-Timestamp`` (Unix seconds)
and ``X-Trustline-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + body``
keyed by the webhook's secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections.abc import Callable, Sequence

import aiohttp

from agent.alerts.config import Webhook
from agent.alerts.repo import AlertRepo, OutboxRow
from agent.clock import Clock
from agent.outbox import Pump
from agent.outbox import backoff as _backoff
from agent.store import Database

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Trustline-Signature"
TIMESTAMP_HEADER = "X-Trustline-Timestamp"
KEY_HEADER = "Idempotency-Key"


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """What a receiver checks (it should also refuse timestamps far from its own clock)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), header)


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before the next try: doubling from 10 s up to 30 min, with 50-100 % jitter so
    many agents coming back together do not hit the receiver in step."""
    return _backoff(attempts, rng, base=10.0, ceiling=1800.0)


class Deliverer:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        webhooks: Sequence[Webhook],
        *,
        retry_hours: float = 24.0,
        rng: random.Random | None = None,
        timeout: float = 10.0,
        lease: float = 60.0,
        batch: int = 50,
        poll_seconds: float = 30.0,
    ) -> None:
        self._repo = AlertRepo(db)
        self._clock = clock
        self.configure(webhooks, retry_hours)
        self._rng = rng or random.Random()
        self._timeout = timeout
        self._lease = max(lease, timeout * 2)
        self._batch = batch
        self._pump = Pump(
            "alert-deliverer", clock, self.run_once, self._repo.next_due, log,
            poll_seconds=poll_seconds,
        )  # fmt: skip
        self.on_result: list[Callable[[str], None]] = []  # delivered | retry | gave_up

    def configure(self, webhooks: Sequence[Webhook], retry_hours: float) -> None:
        """The config in force (at start and on every reload): where to send, for how long."""
        self._webhooks = tuple(webhooks)
        self._retry_hours = retry_hours

    async def start(self) -> None:
        self._pump.start()

    async def stop(self) -> None:
        await self._pump.stop()

    def wake(self) -> None:
        self._pump.wake()

    async def run_once(self) -> int:
        """Send every message due now; returns how many were acknowledged."""
        now = self._clock.now()
        rows = await self._repo.claim_due(now, now + self._lease, self._batch)
        if not rows:
            return 0
        session = await self._pump.session(self._timeout)
        hooks = {h.url: h for h in self._webhooks}
        sends = (self._send(session, row, hooks.get(row.webhook)) for row in rows)
        results = await asyncio.gather(*sends)
        return sum(results)

    async def _send(
        self, session: aiohttp.ClientSession, row: OutboxRow, hook: Webhook | None
    ) -> bool:
        if hook is None:
            await self._finish(row, "webhook is no longer configured", give_up=True)
            return False
        body = row.body.encode()
        stamp = int(self._clock.now())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: signature(hook.secret, stamp, body),
            KEY_HEADER: row.idempotency_key,
        }
        try:
            async with session.post(hook.url, data=body, headers=headers) as resp:
                await resp.read()
                ok, error = 200 <= resp.status < 300, f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if ok:
            await self._repo.delivered(row.id, self._clock.now())
            log.info("alerts: %s %s delivered to %s", row.event, row.idempotency_key, hook.url)
            self._report("delivered")
            return True
        await self._finish(row, error, give_up=False)
        return False

    async def _finish(self, row: OutboxRow, error: str, *, give_up: bool) -> None:
        now = self._clock.now()
        if give_up or now - row.created_at >= self._retry_hours * 3600.0:
            await self._repo.gave_up(row.id, now, error)
            log.error(
                "alerts: gave up on %s %s to %s after %d attempts: %s",
                row.event, row.idempotency_key, row.webhook, row.attempts + 1, error,
            )  # fmt: skip
            self._report("gave_up")
            return
        await self._repo.failed(row.id, now + backoff(row.attempts, self._rng), error)
        log.warning("alerts: %s to %s failed (%s); will retry", row.event, row.webhook, error)
        self._report("retry")

    def _report(self, result: str) -> None:
        for hook in self.on_result:
            hook(result)
