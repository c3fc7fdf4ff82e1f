"""Why agent/ami owns its AMI session instead of panoramisk 1.4's ``Manager`` (last release,
2021): each test drives panoramisk over a real socket against the replay server and asserts
the flaw. If one of these starts failing, panoramisk changed: re-evaluate reusing it.

The matching tests for our client are in test_ami_client.py.
"""

from __future__ import annotations

import asyncio

from panoramisk import Manager

from tests.ami_replay import ReplayAmiServer
from tests.test_ami_client import NAME, inside_first_multibyte, utf8_event


def manager(port: int, secret: str = "capture-secret", **config: object) -> Manager:
    return Manager(
        host="127.0.0.1",
        port=port,
        username="trustline",
        secret=secret,
        loop=asyncio.get_running_loop(),
        **config,
    )


async def test_panoramisk_loses_a_utf8_character_split_across_reads() -> None:
    async with ReplayAmiServer() as server:
        names: list[str] = []
        ami = manager(server.port)
        ami.register_event("NewCallerid", lambda m, event: names.append(event["CallerIDName"]))
        await ami.connect()
        await server.wait_for(lambda: server.logins == 1)
        event = utf8_event()
        await server.play_split(event, inside_first_multibyte(event))
        await ami.send_action({"Action": "Ping"})  # ordered after the event on the stream
        # Each read is decoded alone with errors="ignore": the character cut in two vanishes.
        assert names == [NAME.replace("ë", "")]
        ami.close()


async def test_panoramisk_never_notices_a_silent_link() -> None:
    async with ReplayAmiServer() as server:
        lost: list[object] = []
        ami = manager(
            server.port, ping_delay=1, ping_interval=1, on_disconnect=lambda m, e: lost.append(e)
        )
        await ami.connect()
        await server.wait_for(lambda: server.logins == 1)
        server.silent = True
        # Pings go out, no Pong ever comes back, and the Manager still thinks all is well.
        await server.wait_for(lambda: len(server.actions_named("Ping")) >= 2, within=10)
        assert ami._connected and not ami.protocol.closed and not lost
        ami.close()


async def test_panoramisk_leaves_an_action_pending_when_the_link_drops() -> None:
    async with ReplayAmiServer() as server:
        gone = asyncio.Event()
        ami = manager(server.port, reconnect_timeout=3600, on_disconnect=lambda m, e: gone.set())
        await ami.connect()
        await server.wait_for(lambda: server.logins == 1)
        server.silent = True
        future = ami.send_action({"Action": "DBGet", "Family": "f", "Key": "k"})
        await server.wait_for(lambda: server.actions_named("DBGet"))
        await server.drop()
        async with asyncio.timeout(5):
            await gone.wait()
        # Neither failed nor timed out: the caller would wait for a reconnect that may not come.
        assert not future.done()
        future.cancel()
        ami.close()


async def test_panoramisk_raises_nothing_on_a_refused_login_and_retries_on_a_fixed_timer() -> None:
    async with ReplayAmiServer(fail_delay=0.05) as server:
        ami = manager(server.port, secret="wrong", reconnect_timeout=1)
        await ami.connect()  # returns normally
        await server.wait_for(lambda: server.refused >= 2, within=10)
        # No exception reached the caller, nothing but a boolean says the login failed, and
        # the retry delay is a constant (no backoff, no jitter) for as long as the process lives.
        assert ami.authenticated is False
        assert ami.reconnect_timeout == 1
        ami.close()


async def test_panoramisk_event_lists_are_sound() -> None:
    # What panoramisk gets right, for the record: an EventList is gathered until its
    # ...Complete event. Our client does the same (test_ami_client.py).
    async with ReplayAmiServer() as server:
        ami = manager(server.port)
        await ami.connect()
        await server.wait_for(lambda: server.logins == 1)
        await ami.send_action({"Action": "DBPut", "Family": "f", "Key": "k", "Val": "v"})
        replies = await ami.send_action({"Action": "DBGet", "Family": "f", "Key": "k"})
        assert [r.get("Event") or r.get("Response") for r in replies] == [
            "Success",
            "DBGetResponse",
            "DBGetComplete",
        ]
        assert replies[1]["Val"] == "v"
        ami.close()
