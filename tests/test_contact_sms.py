"""The SMS outbox against a local HTTP server playing the provider: Twilio's form fields and
Basic auth, the generic HTTP provider's body template, 429 with Retry-After, 500, a timeout,
a permanent 400, a restart with messages pending, and no number or text in logs or store."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from agent.clock import FrozenClock
from agent.contact.config import ContactConfig, SmsSection
from agent.contact.outbox import SmsOutbox
from agent.store import open_database

KEY = b"k" * 32
SID = "AC" + "0" * 32
PATIENT = "+33612345678"
TEXT = "Clinique StMarc vous appellera le 17/11 à 10h00 depuis le 01 42 00 00 02."


class FakeProvider:
    """Answers each request with the next scripted reply; records what it received."""

    def __init__(self) -> None:
        self.script: list[Callable[[], web.StreamResponse]] = []
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((dict(request.headers), await request.read()))
        reply = self.script.pop(0) if self.script else (lambda: web.json_response({}, status=201))
        response = reply()
        if response.status == 599:  # scripted timeout: answer after the client gave up
            await asyncio.sleep(2.0)
            return web.json_response({"sid": "late"}, status=201)
        return response


@pytest.fixture
async def provider() -> AsyncIterator[tuple[FakeProvider, str]]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def twilio_section(base: str, token_file: Path, **extra: object) -> SmsSection:
    token_file.write_text("s3cret-token\n")
    cfg = ContactConfig.model_validate(
        {
            "centre": "Clinique StMarc",
            "sms": {
                "provider": "twilio",
                "sender": "+33142000002",
                "timeout_seconds": 0.5,
                "twilio": {
                    "account_sid": SID,
                    "auth_token_file": str(token_file),
                    "base_url": base,
                },
                **extra,
            },
        }
    )
    assert cfg.sms is not None
    return cfg.sms


def store_bytes(folder: Path) -> bytes:
    """The SQLite file with its WAL: what a disk thief would read."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.name.startswith("store"))


async def queue_one(outbox: SmsOutbox, clock: FrozenClock, key: str = "announce-1") -> None:
    now = clock.now()
    await outbox.enqueue(
        key,
        purpose="reminder",
        pool="reminders",
        callee_hash="h" * 64,
        to=PATIENT,
        text=TEXT,
        send_at=now,
        expires_at=now + 3600,
    )


async def test_twilio_request_429_retry_after_500_timeout_then_sent(
    tmp_path: Path, provider: tuple[FakeProvider, str], caplog: pytest.LogCaptureFixture
) -> None:
    fake, base = provider
    clock = FrozenClock(1_800_000_000)
    section = twilio_section(base, tmp_path / "token")
    db = await open_database(tmp_path / "store.sqlite3")
    outbox = SmsOutbox(db, clock, KEY, lambda: section, rng=random.Random(1), backoff_base=10)
    caplog.set_level(logging.DEBUG)
    fake.script = [
        lambda: web.json_response({"code": 20429}, status=429, headers={"Retry-After": "120"}),
        lambda: web.json_response({"code": 20500}, status=500),
        lambda: web.Response(status=599),  # the provider hangs past the 0.5 s timeout
        lambda: web.json_response({"sid": "SM" + "1" * 32, "status": "queued"}, status=201),
    ]
    await queue_one(outbox, clock)
    try:
        assert await outbox.run_once() == 0  # 429
        [row] = await outbox._repo.outbox()
        assert row["last_error"] == "HTTP 429 code 20429"
        # Retry-After 120 s is longer than the backoff (10 s doubling): nothing before it.
        clock.advance(119)
        assert await outbox.run_once() == 0 and len(fake.requests) == 1
        clock.advance(1)
        assert await outbox.run_once() == 0  # 500
        clock.advance(40)
        assert await outbox.run_once() == 0  # timeout
        [row] = await outbox._repo.outbox()
        assert row["last_error"] == "timeout" and row["attempts"] == 3
        clock.advance(80)
        assert await outbox.run_once() == 1
        [row] = await outbox._repo.outbox()
    finally:
        await outbox.stop()
    assert row["sent_at"] is not None and row["provider_ref"] == "SM" + "1" * 32
    assert row["sealed"] == 0  # destination and text wiped once sent
    # Twilio's documented shape: form fields and Basic auth with the SID and the token.
    headers, body = fake.requests[-1]
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    user, token = base64.b64decode(headers["Authorization"].split()[1]).decode().split(":")
    assert (user, token) == (SID, "s3cret-token")
    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
    assert fields == {"To": PATIENT, "From": "+33142000002", "Body": TEXT}
    assert len(fake.requests) == 4
    # Never the patient's number or the text in logs or in the store file.
    assert "12345678" not in caplog.text and "appellera" not in caplog.text
    await db.close()
    raw = store_bytes(tmp_path)
    assert b"612345678" not in raw and b"appellera" not in raw


async def test_generic_http_provider_fills_the_body_template(
    tmp_path: Path, provider: tuple[FakeProvider, str]
) -> None:
    fake, base = provider
    secret = tmp_path / "sms.secret"
    secret.write_text("tok\n")
    cfg = ContactConfig.model_validate(
        {
            "sms": {
                "provider": "http",
                "sender": "StMarc",
                "http": {
                    "url": f"{base}/v1/send",
                    "auth": "bearer",
                    "auth_file": str(secret),
                    "body": '{"recipient": "${to}", "message": "${text}", "from": "${sender}"}',
                },
            }
        }
    )
    clock = FrozenClock(1_800_000_000)
    db = await open_database(tmp_path / "store.sqlite3")
    outbox = SmsOutbox(db, clock, KEY, lambda: cfg.sms)
    now = clock.now()
    quote_text = 'Say "hi"\nthen {braces}'
    await outbox.enqueue(
        "k", purpose="reminder", pool=None, callee_hash="h", to=PATIENT, text=quote_text,
        send_at=now, expires_at=now + 60,
    )  # fmt: skip
    try:
        assert await outbox.run_once() == 1
    finally:
        await outbox.stop()
        await db.close()
    headers, body = fake.requests[0]
    assert headers["Authorization"] == "Bearer tok"
    assert json.loads(body) == {"recipient": PATIENT, "message": quote_text, "from": "StMarc"}


async def test_permanent_error_gives_up_at_once_and_wipes(
    tmp_path: Path, provider: tuple[FakeProvider, str]
) -> None:
    fake, base = provider
    section = twilio_section(base, tmp_path / "token")
    clock = FrozenClock(1_800_000_000)
    db = await open_database(tmp_path / "store.sqlite3")
    outbox = SmsOutbox(db, clock, KEY, lambda: section)
    fake.script = [
        lambda: web.json_response({"code": 21211, "message": f"bad {PATIENT}"}, status=400)
    ]
    await queue_one(outbox, clock)
    try:
        assert await outbox.run_once() == 0
        [row] = await outbox._repo.outbox()
        clock.advance(3600)
        assert await outbox.run_once() == 0
    finally:
        await outbox.stop()
        await db.close()
    assert row["gave_up_at"] is not None and row["sealed"] == 0
    assert (
        row["last_error"] == "HTTP 400 code 21211"
    )  # the provider's text (with the number) dropped
    assert len(fake.requests) == 1


async def test_no_retry_past_the_planned_call(
    tmp_path: Path, provider: tuple[FakeProvider, str]
) -> None:
    fake, base = provider
    section = twilio_section(base, tmp_path / "token")
    clock = FrozenClock(1_800_000_000)
    db = await open_database(tmp_path / "store.sqlite3")
    outbox = SmsOutbox(db, clock, KEY, lambda: section)
    # Retry-After beyond the call time: the SMS would arrive after the call, so it is dropped.
    fake.script = [lambda: web.Response(status=429, headers={"Retry-After": "7200"})]
    await queue_one(outbox, clock)
    try:
        await outbox.run_once()
        [row] = await outbox._repo.outbox()
    finally:
        await outbox.stop()
        await db.close()
    assert row["gave_up_at"] is not None
    assert row["last_error"] == "HTTP 429; no retry before the call"


async def test_pending_messages_survive_a_restart(
    tmp_path: Path, provider: tuple[FakeProvider, str]
) -> None:
    fake, base = provider
    section = twilio_section(base, tmp_path / "token")
    clock = FrozenClock(1_800_000_000)
    db = await open_database(tmp_path / "store.sqlite3")
    first = SmsOutbox(db, clock, KEY, lambda: section)
    await queue_one(first, clock)
    await first.stop()
    await db.close()  # the agent stops before sending

    db = await open_database(tmp_path / "store.sqlite3")
    second = SmsOutbox(db, clock, KEY, lambda: section, poll_seconds=0.05)
    await second.start()  # the background sender, as the agent runs it
    try:
        for _ in range(100):
            if fake.requests:
                break
            await asyncio.sleep(0.02)
    finally:
        await second.stop()
        await db.close()
    fields = {k: v[0] for k, v in parse_qs(fake.requests[0][1].decode()).items()}
    assert fields["To"] == PATIENT and fields["Body"] == TEXT
