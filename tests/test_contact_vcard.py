"""GET /vcard/<pool>.vcf over a real socket: the centre's name and every number of the pool,
vCard 3.0 with TEL;TYPE=..., parsed by vobject (which built it) and by the independent `vcard`
validator (RFC 2426); 404 while disabled, for a reserve pool and for an unknown pool."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import vcard.vcard_validator as rfc2426
import vobject
from aiohttp import web

from agent.config import Config, parse_config
from agent.contact.config import ContactConfig
from agent.contact.http import vcard_routes
from tests.conftest import POOLS

Serve = Callable[[ContactConfig], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []
    config: Config = parse_config(POOLS)

    async def start(contact: ContactConfig) -> str:
        app = web.Application()
        app.add_routes(vcard_routes(lambda: config, lambda: contact))
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


ENABLED = ContactConfig.model_validate(
    {
        "centre": "Clinique Saint-Marc",
        "vcard": {"enabled": True},
        "pools": {"reminders": {"inbound": ["01 42 00 00 00"]}},
    }
)


async def fetch(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_vcard_lists_the_centre_and_every_number(serve: Serve) -> None:
    base = await serve(ENABLED)
    status, ctype, text = await fetch(f"{base}/vcard/reminders.vcf")
    assert status == 200 and ctype == "text/vcard; charset=utf-8"
    assert text.startswith("BEGIN:VCARD\r\nVERSION:3.0\r\n") and text.endswith("END:VCARD\r\n")

    card = vobject.readOne(text)
    assert card.fn.value == "Clinique Saint-Marc"
    assert card.org.value == ["Clinique Saint-Marc"]
    numbers = {tel.value: tel.params["TYPE"] for tel in card.tel_list}
    assert numbers == {
        "+33142000000": ["WORK", "VOICE", "PREF"],  # the number to call back
        "+33142000001": ["WORK", "VOICE"],
        "+33142000002": ["WORK", "VOICE"],
        "+33472000003": ["WORK", "VOICE"],
    }

    # A second, independent parser: the `vcard` package validates RFC 2426 strictly.
    parsed = rfc2426.VCard(text)
    tels = [p for p in parsed.properties if p.name == "TEL"]
    assert sorted(p.values[0][0] for p in tels) == sorted(numbers)
    assert {p.name for p in parsed.properties} >= {"VERSION", "FN", "N", "ORG", "TEL"}


async def test_vcard_is_404_unless_enabled_and_for_other_pools(serve: Serve) -> None:
    base = await serve(ContactConfig())
    assert (await fetch(f"{base}/vcard/reminders.vcf"))[0] == 404
    base = await serve(ENABLED)
    for path in ("reserve.vcf", "nope.vcf", "..%2Fetc.vcf"):
        assert (await fetch(f"{base}/vcard/{path}"))[0] == 404
