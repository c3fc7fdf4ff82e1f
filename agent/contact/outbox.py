"""The SMS outbox: messages queued in the store, sent in the background, retried with backoff.

May: seal a message (destination and text) into the store, read due rows under a lease,
call the configured provider, record the result. Must not: run on a call's path (announce
only queues; the sender is its own task), log a destination or a text, keep either once the
message is sent or given up (the sealed column is wiped), or send after the planned call
time (an SMS announcing a call that already happened is given up).

Sealing uses AES-256-GCM from ``cryptography`` with a key derived (HKDF-SHA256) from the
callee-hash key, which every agent on one database shares; the row's idempotency key is the
associated data, so a sealed blob cannot be moved to another row.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
from collections.abc import Callable

import aiohttp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.clock import Clock
from agent.contact.config import SmsSection
from agent.contact.repo import ContactRepo, OutboxRow
from agent.contact.sms import SendResult, SmsProvider, provider_for
from agent.outbox import Pump
from agent.outbox import backoff as _backoff
from agent.store import Database

log = logging.getLogger(__name__)


class Sealer:
    """Seals (destination, text) for the outbox; only agents holding the key can open it."""

    def __init__(self, hash_key: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"trustline contact outbox v1"
        ).derive(hash_key)
        self._aead = AESGCM(key)

    def seal(self, row_key: str, to: str, text: str) -> str:
        nonce = os.urandom(12)
        plain = json.dumps({"to": to, "text": text}).encode()
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plain, row_key.encode())).decode()

    def open(self, row_key: str, sealed: str) -> tuple[str, str]:
        raw = base64.b64decode(sealed)
        plain = self._aead.decrypt(raw[:12], raw[12:], row_key.encode())
        found = json.loads(plain)
        return str(found["to"]), str(found["text"])


def backoff(attempts: int, rng: random.Random, base: float = 30.0) -> float:
    """Seconds before the next try: doubling from ``base`` up to 15 min, with 50-100 % jitter
    so agents coming back together do not hit the provider in step."""
    return _backoff(attempts, rng, base=base, ceiling=900.0)


class SmsOutbox:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        hash_key: bytes,
        section: Callable[[], SmsSection | None],
        *,
        rng: random.Random | None = None,
        backoff_base: float = 30.0,
        lease: float = 120.0,
        batch: int = 20,
        poll_seconds: float = 30.0,
    ) -> None:
        self._repo = ContactRepo(db)
        self._clock = clock
        self._sealer = Sealer(hash_key)
        self._section = section
        self._rng = rng or random.Random()
        self._base = backoff_base
        self._lease = lease
        self._batch = batch
        self._pump = Pump(
            "contact-sms-outbox", clock, self.run_once, self._repo.next_due, log,
            poll_seconds=poll_seconds,
        )  # fmt: skip
        self.on_result: list[Callable[[str], None]] = []  # sent | retry | gave_up

    async def enqueue(
        self,
        key: str,
        *,
        purpose: str,
        pool: str | None,
        callee_hash: str,
        to: str,
        text: str,
        send_at: float,
        expires_at: float,
    ) -> bool:
        """Queue one message (False: this key was queued already). Returns at once."""
        sealed = self._sealer.seal(key, to, text)
        added = await self._repo.enqueue(
            key, purpose, pool, callee_hash, sealed, self._clock.now(), send_at, expires_at
        )
        self._pump.wake()
        return added

    async def start(self) -> None:
        self._pump.start()

    async def stop(self) -> None:
        await self._pump.stop()

    async def run_once(self) -> int:
        """Send every message due now; returns how many the provider accepted."""
        section = self._section()
        if section is None:
            return 0  # no provider configured: messages wait (announce refuses --sms anyway)
        now = self._clock.now()
        rows = await self._repo.claim_due(now, now + self._lease, self._batch)
        if not rows:
            return 0
        session = await self._pump.session(section.timeout_seconds)
        provider = provider_for(section)
        results = await asyncio.gather(
            *(self._send(session, provider, section, row) for row in rows)
        )
        return sum(results)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        provider: SmsProvider,
        section: SmsSection,
        row: OutboxRow,
    ) -> bool:
        now = self._clock.now()
        if row.sealed is None:
            await self._give_up(row, "nothing to send", attempted=False)
            return False
        if now >= row.expires_at:
            await self._give_up(row, "the planned call time has passed", attempted=False)
            return False
        try:
            to, text = self._sealer.open(row.idempotency_key, row.sealed)
        except (InvalidTag, ValueError, KeyError):
            await self._give_up(row, "sealed by another key (callee-hash key changed?)", False)
            return False
        result = await provider.send(session, to, section.sender, text)
        if result.outcome == "sent":
            await self._repo.sent(row.id, self._clock.now(), result.provider_ref)
            log.info("contact: SMS %s (%s) sent by %s", row.id, row.purpose, provider.name)
            self._report("sent")
            return True
        if result.outcome == "failed" or row.attempts + 1 >= section.max_attempts:
            await self._give_up(row, result.detail, attempted=True)
            return False
        await self._retry(row, result)
        return False

    async def _retry(self, row: OutboxRow, result: SendResult) -> None:
        now = self._clock.now()
        wait = backoff(row.attempts, self._rng, self._base)
        if result.retry_after is not None:
            wait = max(wait, result.retry_after)  # the provider said when; never sooner
        if now + wait >= row.expires_at:
            await self._give_up(row, f"{result.detail}; no retry before the call", True)
            return
        await self._repo.retry(row.id, now + wait, result.detail)
        log.warning("contact: SMS %s failed (%s); retrying in %.0f s", row.id, result.detail, wait)
        self._report("retry")

    async def _give_up(self, row: OutboxRow, why: str, attempted: bool) -> None:
        await self._repo.gave_up(row.id, self._clock.now(), why, attempted=attempted)
        log.error("contact: gave up on SMS %s (%s): %s", row.id, row.purpose, why)
        self._report("gave_up")

    def _report(self, result: str) -> None:
        for hook in self.on_result:
            hook(result)
