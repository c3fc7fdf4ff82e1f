"""Alert outbox over real sockets: a local aiohttp server plays the webhook receiver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent.alerts.config import AlertsConfig, Webhook, load_webhooks
from agent.alerts.deliver import (
    KEY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Deliverer,
    verify,
)
from agent.alerts.service import KINDS, AlertService
from agent.clock import FrozenClock
from agent.errors import ConfigError
from agent.store.db import Database, SqliteDatabase, open_database

REPO = str(Path(__file__).resolve().parents[1])
SECRET = b"s3cret-for-the-webhook-tests-0123456789"


@dataclass
class Receiver:
    url: str = ""
    mode: str = "ok"  # ok | down | hang
    acked: list[tuple[str, dict[str, object]]] = field(default_factory=list)  # (key, body)
    seen: list[str] = field(default_factory=list)  # every key that arrived, answered or not
    bad_signatures: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify(
            SECRET,
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
        )
        self.bad_signatures += not ok
        key = request.headers[KEY_HEADER]
        self.seen.append(key)
        self.arrived.set()
        if self.mode == "down":
            return web.Response(status=503)
        if self.mode == "hang":
            await self.release.wait()
            return web.Response(status=503)
        self.acked.append((key, json.loads(body)))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    rec.release.set()
    await runner.cleanup()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = await open_database(tmp_path / "store.db")
    yield database
    await database.close()


async def test_each_alert_reaches_the_webhook_once_with_a_valid_signature(
    db: Database, receiver: Receiver
) -> None:
    clock = FrozenClock(1_800_000_000)
    hooks = [Webhook(receiver.url, SECRET)]
    service = AlertService(db, clock, hooks)
    deliverer = Deliverer(db, clock, hooks)
    try:
        first, new = await service.raise_("pool_exhausted", "reminders", "no number left")
        assert new
        clock.advance(60)
        again, new = await service.raise_("pool_exhausted", "reminders", "still nothing")
        assert not new and again.id == first.id and again.last_seen == first.first_seen + 60
        await service.raise_("ami_down", "agent", "AMI link lost")
        assert await service.resolve("pool_exhausted", "reminders", "numbers back")
        assert not await service.resolve("pool_exhausted", "reminders")
        assert await deliverer.run_once() == 3
        assert await deliverer.run_once() == 0
    finally:
        await deliverer.stop()
    assert receiver.bad_signatures == 0
    events = [(b["event"], b["alert"]["kind"]) for _k, b in receiver.acked]  # type: ignore[index]  # JSON body: dict[str, object]
    assert events == [
        ("raised", "pool_exhausted"),
        ("raised", "ami_down"),
        ("resolved", "pool_exhausted"),
    ]
    keys = [k for k, _b in receiver.acked]
    assert len(set(keys)) == 3
    assert keys[0] == f"{first.idempotency_key}:raised"
    # The open incident shows what was last seen; the list says which are still open.
    open_now = await service.incidents(open_only=True)
    assert [(i.kind, i.subject) for i in open_now] == [("ami_down", "agent")]


_KILLED_DELIVERER = """
import asyncio, sys
from pathlib import Path
from agent.alerts.config import Webhook
from agent.alerts.deliver import Deliverer
from agent.clock import SystemClock
from agent.store.db import open_database

async def main():
    db = await open_database(Path(sys.argv[1]))
    hooks = [Webhook(sys.argv[2], sys.argv[3].encode())]
    await Deliverer(db, SystemClock(), hooks, timeout=600).run_once()

asyncio.run(main())
"""


async def test_a_deliverer_killed_between_send_and_ack_resends_with_the_same_key(
    tmp_path: Path, db: SqliteDatabase, receiver: Receiver
) -> None:
    hooks = [Webhook(receiver.url, SECRET)]
    service = AlertService(db, FrozenClock(time.time()), hooks)
    incident, _ = await service.raise_("store_down", "agent", "store unreachable")
    receiver.mode = "hang"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_DELIVERER,
        str(db.path),
        receiver.url,
        SECRET.decode(),
        env={**os.environ, "PYTHONPATH": REPO},
    )
    await asyncio.wait_for(receiver.arrived.wait(), 30)
    proc.send_signal(signal.SIGKILL)  # sent, not acknowledged
    await proc.wait()
    receiver.mode = "ok"
    # After a restart, once the killed sender's lease has run out:
    later = FrozenClock(time.time() + 3600)
    deliverer = Deliverer(db, later, hooks)
    try:
        assert await deliverer.run_once() == 1
        assert await deliverer.run_once() == 0
    finally:
        await deliverer.stop()
    key = f"{incident.idempotency_key}:raised"
    assert receiver.seen == [key, key]
    assert [k for k, _b in receiver.acked] == [key]
    assert receiver.bad_signatures == 0


async def test_a_webhook_down_for_two_hours_then_up_gets_every_alert(
    db: Database, receiver: Receiver
) -> None:
    clock = FrozenClock(1_800_000_000)
    start = clock.now()
    hooks = [Webhook(receiver.url, SECRET)]
    service = AlertService(db, clock, hooks)
    deliverer = Deliverer(db, clock, hooks)
    receiver.mode = "down"
    expected = []
    try:
        for minute in range(4 * 60):
            if minute % 20 == 0 and minute < 120:
                incident, _ = await service.raise_("number_drift", f"+3314200{minute:04d}", "drop")
                expected.append(f"{incident.idempotency_key}:raised")
            if minute == 120:
                receiver.mode = "ok"
            await deliverer.run_once()
            clock.advance(60)
    finally:
        await deliverer.stop()
    assert len(receiver.seen) > len(expected)  # it did retry while the receiver was down
    assert sorted(k for k, _b in receiver.acked) == sorted(expected)
    assert receiver.bad_signatures == 0
    assert clock.now() - start == 4 * 3600


async def test_a_message_is_given_up_after_the_retry_period_and_not_sent_again(
    db: Database, receiver: Receiver
) -> None:
    clock = FrozenClock(1_800_000_000)
    hooks = [Webhook(receiver.url, SECRET)]
    service = AlertService(db, clock, hooks)
    deliverer = Deliverer(db, clock, hooks, retry_hours=1.0)
    receiver.mode = "down"
    try:
        await service.raise_("keyring_missing", "agent", "no keyring")
        for _ in range(120):
            await deliverer.run_once()
            clock.advance(60)
        tries = len(receiver.seen)
        receiver.mode = "ok"
        clock.advance(3600)
        assert await deliverer.run_once() == 0
    finally:
        await deliverer.stop()
    assert tries >= 5 and len(receiver.seen) == tries
    assert receiver.acked == []


async def test_the_running_deliverer_sends_as_soon_as_an_alert_is_raised(
    db: Database, receiver: Receiver
) -> None:
    hooks = [Webhook(receiver.url, SECRET)]
    clock = FrozenClock(time.time())
    service = AlertService(db, clock, hooks)
    deliverer = Deliverer(db, clock, hooks, poll_seconds=3600)
    service.on_queued.append(deliverer.wake)
    await deliverer.start()
    try:
        await service.raise_("reserve_empty", "reserve", "reserve pool is empty")
        await asyncio.wait_for(receiver.arrived.wait(), 30)
    finally:
        await deliverer.stop()
    assert [b["alert"]["kind"] for _k, b in receiver.acked] == ["reserve_empty"]  # type: ignore[index]  # JSON body


def test_an_unreadable_or_short_secret_file_is_a_config_error(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc\n")
    good = tmp_path / "good"
    good.write_text(SECRET.decode() + "\n")
    config = AlertsConfig.model_validate(
        {
            "webhooks": [
                {"url": "https://ops.example/hook", "secret_file": str(good)},
                {"url": "https://ops.example/b", "secret_file": str(tmp_path / "missing")},
                {"url": "https://ops.example/c", "secret_file": str(short)},
            ]
        }
    )
    with pytest.raises(ConfigError) as err:
        load_webhooks(config)
    assert [p.split(":")[0] for p in err.value.problems] == [
        "alerts.webhooks[1].secret_file",
        "alerts.webhooks[2].secret_file",
    ]
    hooks = load_webhooks(config.model_copy(update={"webhooks": config.webhooks[:1]}))
    assert hooks == [Webhook("https://ops.example/hook", SECRET)]
    assert SECRET.decode() not in repr(hooks)


def test_the_prometheus_rules_cover_every_alert_kind() -> None:
    rules = (Path(REPO) / "agent" / "examples" / "trustline-alerts.rules.yml").read_text()
    missing = [kind for kind in KINDS if kind not in rules]
    assert missing == []
    assert "\t" not in rules  # YAML forbids tabs for indentation
