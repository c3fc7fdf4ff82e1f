"""announce -> SMS -> FastAGI call, over real sockets (a local HTTP server plays the SMS
provider; Asterisk's side is the fake that speaks the FastAGI wire): the call presents the
pinned number with TRUSTLINE_REASON=pinned; the pinned number's unit is counted once; a
patient calling back the pinned number after the SMS is recognised as a callback; a pin on a
number that became unhealthy is dropped and its unit given back; `trustline announce` pins
from another process and the agent picks the pin up."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from aiohttp import web

from agent.agi.server import FastAgiServer
from agent.clock import FrozenClock
from agent.config import parse_config
from agent.contact.config import ContactConfig
from agent.contact.outbox import SmsOutbox
from agent.contact.service import ContactService
from agent.errors import BadRequest
from agent.outbound.route import OutboundRoute
from agent.outbound.service import OutboundService
from agent.screening.route import InboundRoute
from agent.screening.service import ScreeningService
from agent.store import Database, open_database
from tests.conftest import PARIS, AgentFactory, agi_port
from tests.fake_asterisk import run_session

KEY = b"c" * 32
PATIENT = "0612345678"
POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = 80

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc" },
  { number = "+33491000005", name = "Clinique StMarc" },
]
"""


@dataclass
class Stack:
    clock: FrozenClock
    db: Database
    outbound: OutboundService
    contact: ContactService
    outbox: SmsOutbox
    agi_port: int
    sms: list[dict[str, str]]

    async def call(self, *args: str) -> dict[str, str]:
        session = await run_session("127.0.0.1", self.agi_port, args=["reminder", *args])
        return session.variables

    async def callback(self, dialled: str) -> dict[str, str]:
        session = await run_session(
            "127.0.0.1", self.agi_port, script="inbound", args=[dialled, "", "", PATIENT]
        )
        return session.variables

    async def counted(self, number: str) -> int:
        """The store's count for ``number`` today, once every held unit is given back."""
        await self.outbound.return_leases()
        row = await self.db.fetchone(
            "SELECT COALESCE(SUM(used), 0) FROM daily_usage WHERE number = ?", (number,)
        )
        assert row is not None
        return int(row[0])


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The pieces app.py wires, built here with a [contact] section of our own."""
    received: list[dict[str, str]] = []

    async def provider(request: web.Request) -> web.Response:
        received.append({k: v[0] for k, v in parse_qs((await request.read()).decode()).items()})
        return web.json_response({"sid": "SM" + "2" * 32}, status=201)

    app = web.Application()
    app.router.add_post("/{tail:.*}", provider)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    (tmp_path / "token").write_text("t")
    contact_cfg = ContactConfig.model_validate(
        {
            "centre": "Clinique StMarc",
            "templates": {
                "reminder": "{centre} vous appellera le {date} à {time} depuis le {number}."
            },
            "sms": {
                "provider": "twilio",
                "sender": "StMarc",
                "twilio": {
                    "account_sid": "AC" + "0" * 32,
                    "auth_token_file": str(tmp_path / "token"),
                    "base_url": f"http://127.0.0.1:{runner.addresses[0][1]}",
                },
            },
        }
    )
    clock = FrozenClock(datetime(2026, 11, 17, 9, 0, tzinfo=PARIS))
    config = parse_config(POOLS)
    db = await open_database(tmp_path / "store.sqlite3")
    outbound = OutboundService(db, clock, config, KEY)
    await outbound.start(watch_interval=None)
    outbox = SmsOutbox(db, clock, KEY, lambda: contact_cfg.sms, rng=random.Random(0))
    contact = ContactService(db, clock, KEY, outbound, lambda: contact_cfg, outbox)
    await contact.start()
    outbound.pins = contact
    screening = ScreeningService(config_provider=lambda: config, db=db, clock=clock, hash_key=KEY)
    screening.also_called = contact.called_recently
    agi = FastAgiServer(
        {"outbound": OutboundRoute(outbound), "inbound": InboundRoute(screening)}, deadline=5.0
    )
    await agi.start("127.0.0.1", 0)
    try:
        yield Stack(clock, db, outbound, contact, outbox, agi.sockets[0][1], received)
    finally:
        await agi.stop()
        await contact.stop()
        await outbox.stop()
        await screening.close()
        await outbound.stop()
        await db.close()
        await runner.cleanup()


async def test_announce_sms_then_the_call_presents_the_pinned_number(stack: Stack) -> None:
    call_at = stack.clock.now() + 30 * 60  # 09:30
    pinned = await stack.contact.announce(
        "reminder", PATIENT, at=call_at, sms=True, area="13008", case_ref="CASE-7"
    )
    assert pinned.number == "+33491000005"  # area=13008: the Bouches-du-Rhône number
    assert pinned.sms_at == call_at - 20 * 60
    assert await stack.counted(pinned.number) == 1  # its unit is reserved now

    assert await stack.outbox.run_once() == 0 and stack.sms == []  # not before 09:10
    stack.clock.advance(10 * 60)
    assert await stack.outbox.run_once() == 1
    [sms] = stack.sms
    assert sms["To"] == "+33612345678" and sms["From"] == "StMarc"
    assert (
        sms["Body"] == "Clinique StMarc vous appellera le 17/11 à 09h30 depuis le 04 91 00 00 05."
    )

    # The patient calls the number from the SMS back before we call: a callback.
    back = await stack.callback("0491000005")
    assert "callback" in back["TRUSTLINE_REASONS"].split(",")

    stack.clock.advance(20 * 60)
    got = await stack.call(PATIENT, "CASE-7")
    assert got["CALLERID(num)"] == "+33491000005"
    assert got["TRUSTLINE_REASON"] == "pinned" and got["TRUSTLINE_STATUS"] == "ok"
    await stack.contact.flush()
    assert await stack.counted("+33491000005") == 1  # the call did not count it again
    # The pin is spent: the next call for this callee is decided as usual (and counted).
    again = await stack.call(PATIENT)
    assert again["TRUSTLINE_REASON"] == "least_used"
    total = sum([await stack.counted(n) for n in ("+33142000001", "+33142000002", "+33491000005")])
    assert total == 2


async def test_a_pin_on_an_unhealthy_number_is_dropped_and_given_back(stack: Stack) -> None:
    pinned = await stack.contact.announce("reminder", "04 72 11 22 33")
    for _ in range(2):  # two spam reports: the pinned number is quarantined
        await stack.outbound.report_spam(pinned.number, "ivr")
    got = await stack.call("04 72 11 22 33")
    assert got["TRUSTLINE_REASON"] != "pinned" and got["CALLERID(num)"] != pinned.number
    await stack.contact.flush()
    row = await stack.db.fetchone("SELECT release_reason FROM contact_pins")
    assert row is not None and row[0] == "unhealthy"
    assert await stack.counted(pinned.number) == 0  # its reserved unit went back


async def test_announce_again_keeps_the_pin_and_sends_one_sms(stack: Stack) -> None:
    at = stack.clock.now() + 25 * 60
    first = await stack.contact.announce("reminder", PATIENT, at=at, sms=True)
    second = await stack.contact.announce("reminder", "+33 6 12 34 56 78", at=at, sms=True)
    assert second.reused and second.number == first.number
    assert await stack.counted(first.number) == 1
    stack.clock.advance(5 * 60)
    assert await stack.outbox.run_once() == 1
    assert len(stack.sms) == 1


async def test_expired_pins_give_their_unit_back(stack: Stack) -> None:
    pinned = await stack.contact.announce("reminder", PATIENT)
    stack.clock.advance(24 * 3600 + 1)
    await stack.contact.refresh()
    row = await stack.db.fetchone("SELECT release_reason FROM contact_pins")
    assert row is not None and row[0] == "expired"
    assert await stack.counted(pinned.number) == 0


async def test_refused_announcements(stack: Stack) -> None:
    now = stack.clock.now()
    with pytest.raises(BadRequest, match="no pool serves purpose"):
        await stack.contact.announce("survey", PATIENT)
    with pytest.raises(BadRequest, match="on the day of the call"):
        await stack.contact.announce("reminder", PATIENT, at=now + 16 * 3600)
    with pytest.raises(BadRequest, match="in the past"):
        await stack.contact.announce("reminder", PATIENT, at=now - 3600)
    assert await stack.db.fetchone("SELECT 1 FROM contact_pins") is None


async def test_trustline_announce_pins_for_the_running_agent(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:

    clock.set(time.time())  # the command runs on the system clock: the same day for both
    agent = await make_agent(POOLS)
    env_args = ["--data-dir", str(agent.settings.data_dir), "--config", str(agent.settings.config)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "announce", "--purpose", "reminder",
        "--callee", PATIENT, "--area", "13", *env_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("pinned +33491000005 (Clinique StMarc) for ***5678 until ")
    assert agent.contact is not None
    await agent.contact.refresh()  # what its refresh loop does every 2 s
    session = await run_session("127.0.0.1", agi_port(agent), args=["reminder", PATIENT])
    assert session.variables["CALLERID(num)"] == "+33491000005"
    assert session.variables["TRUSTLINE_REASON"] == "pinned"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "announce", "--purpose", "reminder",
        "--callee", PATIENT, "--sms", *env_args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (
        proc.returncode == 64 and "a pre-call SMS needs [contact.sms] in pools.toml" in err.decode()
    )


async def test_post_api_v1_announce(make_agent: AgentFactory) -> None:
    from tests.admin_rig import start_rig

    rig = await start_rig(make_agent, pools=POOLS)
    body = {"purpose": "reminder", "callee": PATIENT, "area": "13008"}
    status, _ = await rig.call("POST", "/api/v1/announce", "viewer", json=body)
    assert status == 403  # a viewer reads; announcing acts
    status, answer = await rig.call("POST", "/api/v1/announce", "operator", json=body)
    assert status == 200, answer
    assert answer["number"] == "+33491000005" and answer["reused"] is False
    status, answer = await rig.call(
        "POST", "/api/v1/announce", "operator", json={**body, "sms": True}
    )
    assert status == 400 and "a pre-call SMS needs [contact.sms]" in str(answer)
    assert rig.agent.db is not None
    row = await rig.agent.db.fetchone(
        "SELECT action, target, detail FROM admin_audit WHERE action = 'announce'"
    )
    assert row is not None and row[1] == "+33491000005"
    assert "12345678" not in row[2] and "***5678" in row[2]  # the patient, masked
    got = await run_session("127.0.0.1", agi_port(rig.agent), args=["reminder", PATIENT])
    assert got.variables["TRUSTLINE_REASON"] == "pinned"
