"""The AMI session over real sockets against the replay server (captured bytes)."""

from __future__ import annotations

import asyncio

import pytest

from agent.ami.client import (
    AmiAuthError,
    AmiClient,
    AmiConnectionError,
    AmiLinkDead,
    AmiTimeout,
)
from agent.ami.protocol import Message
from tests.ami_replay import ReplayAmiServer, events, load, with_header

NAME = "Zoë Åström-Ça"


def inside_first_multibyte(message: bytes) -> int:
    """Byte offset that cuts the first multi-byte UTF-8 character of ``message`` in half."""
    return next(i for i, b in enumerate(message) if b >= 0xC0) + 1


def utf8_event() -> bytes:
    """A captured NewCallerid whose caller name has multi-byte UTF-8 characters."""
    captured = next(e for e in events("ami-answered") if e.startswith(b"Event: NewCallerid"))
    return with_header(captured, "CallerIDName", NAME)


async def logged_in(
    server: ReplayAmiServer, got: list[Message], idle_timeout: float | None = None
) -> AmiClient:
    client = AmiClient("127.0.0.1", server.port, on_event=got.append, idle_timeout=idle_timeout)
    await client.connect("trustline", "capture-secret")
    return client


async def test_login_confirmed_then_ping_answered() -> None:
    async with ReplayAmiServer() as server:
        client = await logged_in(server, [])
        assert client.version == "13.0.0"
        pong = await client.action("Ping")
        assert pong.ok and pong.fields["Ping"] == "Pong"
        await client.close()
        assert server.actions_named("Logoff")


async def test_md5_challenge_login_sends_the_captured_key() -> None:
    async with ReplayAmiServer(md5_secret="capture-secret") as server:
        client = AmiClient("127.0.0.1", server.port, on_event=lambda e: None)
        await client.connect("trustline", "capture-secret", md5=True)
        login = server.actions_named("Login")[0]
        # The key Asterisk accepted in ami-challenge.jsonl for the same challenge and secret.
        captured = next(r for r in load("ami-challenge") if b"Key: " in r.data)
        assert f"Key: {login['Key']}".encode() in captured.data
        assert "Secret" not in login
        await client.close()


async def test_refused_login_is_a_clear_error_without_the_secret() -> None:
    async with ReplayAmiServer(fail_delay=0.2) as server:
        client = AmiClient("127.0.0.1", server.port, on_event=lambda e: None)
        with pytest.raises(AmiAuthError) as caught:
            await client.connect("trustline", "wrong-secret-123")
        assert "Authentication failed" in str(caught.value)
        assert "'trustline'" in str(caught.value)
        assert "wrong-secret-123" not in str(caught.value)
        assert client.is_closed


async def test_event_lists_return_whole_and_never_leak_as_events() -> None:
    async with ReplayAmiServer() as server:
        got: list[Message] = []
        client = await logged_in(server, got)
        put = await client.action(
            "DBPut", {"Family": "trustline/fallback", "Key": "reminder", "Val": "+33142000001"}
        )
        assert put.ok
        found = await client.action("DBGet", {"Family": "trustline/fallback", "Key": "reminder"})
        assert [e["Val"] for e in found.events] == ["+33142000001"]
        missing = await client.action("DBGet", {"Family": "trustline/fallback", "Key": "nothing"})
        assert not missing.ok and missing.message == "Database entry not found"
        server.live_channels = {"1795344922.29": "1795344922.28", "1795344922.31": "1795344922.28"}
        channels = await client.action("CoreShowChannels")
        assert sorted(e["Uniqueid"] for e in channels.events) == ["1795344922.29", "1795344922.31"]
        assert not [e for e in got if e["Event"] in ("DBGetResponse", "CoreShowChannel")]
        await client.close()


async def test_utf8_split_across_reads_is_kept() -> None:
    async with ReplayAmiServer(chunk=1) as server:
        got: list[Message] = []
        client = await logged_in(server, got)
        await server.play([utf8_event()])
        await client.action("Ping")  # the Pong comes after the event on the same stream
        names = [e["CallerIDName"] for e in got if e["Event"] == "NewCallerid"]
        assert names == [NAME]
        await client.close()


async def test_utf8_character_cut_between_two_reads_is_kept() -> None:
    async with ReplayAmiServer() as server:
        got: list[Message] = []
        client = await logged_in(server, got)
        event = utf8_event()
        await server.play_split(event, inside_first_multibyte(event))
        await client.action("Ping")
        assert [e["CallerIDName"] for e in got if e["Event"] == "NewCallerid"] == [NAME]
        await client.close()


async def test_captured_call_reaches_the_handler_in_order() -> None:
    async with ReplayAmiServer(chunk=7) as server:
        got: list[Message] = []
        client = await logged_in(server, got)
        stream = events("ami-answered")
        await server.play(stream)
        await client.action("Ping")
        seen = [e["Event"] for e in got if e["Event"] != "FullyBooted"]
        assert seen == [e.split(b"\r\n", 1)[0][7:].decode() for e in stream]
        await client.close()


async def test_silent_link_is_detected_by_the_heartbeat() -> None:
    async with ReplayAmiServer() as server:
        client = await logged_in(server, [])
        server.silent = True
        with pytest.raises(AmiConnectionError, match="no Pong"):
            async with asyncio.timeout(10):
                await client.heartbeat(0.1, 0.3)
        assert client.is_closed


async def test_every_action_has_a_deadline() -> None:
    async with ReplayAmiServer() as server:
        client = await logged_in(server, [])
        server.silent = True
        with pytest.raises(AmiTimeout, match="DBGet"):
            await client.action("DBGet", {"Family": "f", "Key": "k"}, deadline=0.3)
        await client.close(logoff=False)


async def test_dropped_link_fails_pending_actions_at_once() -> None:
    async with ReplayAmiServer() as server:
        client = await logged_in(server, [])
        server.silent = True
        pending = asyncio.create_task(
            client.action("DBGet", {"Family": "f", "Key": "k"}, deadline=30)
        )
        await server.wait_for(lambda: server.actions_named("DBGet"))
        await server.drop()
        with pytest.raises(AmiConnectionError, match="closed by Asterisk"):
            async with asyncio.timeout(5):
                await pending
        assert await client.wait_closed() == "connection closed by Asterisk"


async def test_oversized_message_closes_the_link() -> None:
    async with ReplayAmiServer() as server:
        client = AmiClient(
            "127.0.0.1", server.port, on_event=lambda e: None, max_message_bytes=4096
        )
        await client.connect("trustline", "capture-secret")
        await server.play([b"Event: Flood\r\n" + b"X: " + b"y" * 10_000])
        async with asyncio.timeout(5):
            reason = await client.wait_closed()
        assert "larger than 4096" in reason


async def test_a_peer_that_is_not_asterisk_is_refused() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AmiClient("127.0.0.1", port, on_event=lambda e: None)
    with pytest.raises(AmiConnectionError, match="not an AMI banner"):
        await client.connect("trustline", "x")
    server.close()
    await server.wait_closed()


async def test_connection_refused_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = AmiClient("127.0.0.1", port, on_event=lambda e: None)
    with pytest.raises(AmiConnectionError, match="cannot connect"):
        await client.connect("trustline", "x")


async def test_idle_timeout_bounds_every_read() -> None:
    async with ReplayAmiServer() as server:
        client = await logged_in(server, [], idle_timeout=0.3)
        # Nothing at all comes from Asterisk (no events, no Pong asked): the read gives up.
        async with asyncio.timeout(5):
            reason = await client.wait_closed()
        assert reason == "nothing received for 0.3 s: link dead"
        with pytest.raises(AmiLinkDead):
            await client.heartbeat(10, 1)
