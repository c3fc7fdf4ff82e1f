"""The FastAGI wire protocol over real TCP, driven by the bytes of a real Asterisk."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.agi.routing import AgiAnswer, AgiRequest
from agent.agi.server import FastAgiServer
from agent.agi.session import parse_reply, quote
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import capture, header_block, run_session


def _agent_lines(name: str) -> list[str]:
    return [str(r["data"]) for r in capture(name) if r["dir"] == "agent"]


def _asterisk_replies(name: str) -> list[str]:
    """Reply lines Asterisk sent after the header block."""
    records = capture(name)
    blank = next(i for i, r in enumerate(records) if r["data"] == "\n")
    return [str(r["data"]).rstrip("\n") for r in records[blank + 1 :] if r["dir"] == "asterisk"]


def test_quote_matches_the_bytes_asterisk_accepted() -> None:
    lines = _agent_lines("fastagi-outbound.jsonl")
    sent = next(line for line in lines if "TRUSTLINE_QUOTED" in line)
    value = 'say "hello" there'
    assert "SET VARIABLE TRUSTLINE_QUOTED " + quote(value) + "\n" == sent


def test_quote_strips_line_breaks_that_would_start_a_second_command() -> None:
    value = quote('Evil\r\nEXEC Dial "x"')
    assert "\n" not in value and "\r" not in value
    assert value == '"Evil  EXEC Dial \\"x\\""'


def test_captured_replies_parse() -> None:
    replies = _asterisk_replies("fastagi-outbound.jsonl")
    assert parse_reply([replies[0]]).data == "0000000000"
    assert parse_reply(['200 result=1 (say "hello" there)']).data == 'say "hello" there'
    assert parse_reply(["200 result=0"]).result == "0"
    multi = [r for r in replies if r.startswith("520")] + []
    start = replies.index(multi[0])
    block = replies[start : start + 3]
    reply = parse_reply(block)
    assert reply.code == 520 and reply.lines[-1] == "520 End of proper usage."
    assert parse_reply(["510 Invalid or unknown command"]).code == 510


async def test_captured_outbound_session_is_served_byte_correctly(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    session = await run_session(
        "127.0.0.1",
        agi_port(agent),
        script="outbound?purpose=reminder",
        args=["reminder", "0142123456"],
    )
    # Local presence: a Paris callee gets a Paris (01) number, the least used one.
    assert session.commands == [
        'SET VARIABLE CALLERID(num) "+33142000001"',
        'SET VARIABLE CALLERID(name) "Clinique StMarc"',
        'SET VARIABLE TRUSTLINE_STATUS "ok"',
        'SET VARIABLE TRUSTLINE_POOL "reminders"',
        'SET VARIABLE TRUSTLINE_REASON "local_number"',
    ]
    assert session.closed_by_agent


async def test_purpose_from_the_script_query_when_no_argument(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    session = await run_session(
        "127.0.0.1", agi_port(agent), script="outbound?purpose=confirmation", args=[]
    )
    assert session.variables["TRUSTLINE_STATUS"] == "ok"


async def test_unknown_route_and_bad_arguments_answer_error(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    port = agi_port(agent)
    unknown = await run_session("127.0.0.1", port, script="nosuch", args=["x"])
    assert unknown.variables == {
        "TRUSTLINE_STATUS": "error",
        "TRUSTLINE_POOL": "",
        "TRUSTLINE_REASON": "unknown_route",
    }
    bad = await run_session("127.0.0.1", port, script="outbound", args=["gardening", "0142123456"])
    assert bad.variables["TRUSTLINE_STATUS"] == "error"
    assert bad.variables["TRUSTLINE_REASON"] == "unknown_purpose"
    assert "CALLERID(num)" not in bad.variables
    none = await run_session("127.0.0.1", port, script="outbound", args=[])
    assert none.variables["TRUSTLINE_REASON"] == "missing_purpose"


async def _raw(port: int, payload: bytes) -> bytes:
    """Send ``payload`` and read what the agent answers until it closes (none: just close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not payload:
            return b""
        writer.write(payload)
        await writer.drain()
        writer.write_eof()  # the peer has said all it will say
        return await asyncio.wait_for(reader.read(65536), 5)
    except OSError:  # reset, or closed before our write_eof (ENOTCONN): nothing answered
        return b""
    finally:
        writer.close()


async def _still_serves(port: int) -> None:
    session = await run_session("127.0.0.1", port, args=["reminder", "0142123456"])
    assert session.variables["TRUSTLINE_STATUS"] == "ok"


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"", id="health-probe-connects-and-closes"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="garbage-http"),
        pytest.param(b"agi_network: yes\n" + b"x" * (1024 * 1024) + b"\n", id="one-megabyte-line"),
        pytest.param(b"agi_network: yes\nagi_network_script: outb", id="closed-mid-headers"),
        pytest.param(b"\xff\xfe\x00\x01garbage\n\n", id="binary-garbage"),
        pytest.param(b"\n", id="blank-line-first"),
    ],
)
async def test_bad_input_closes_that_connection_and_the_server_keeps_serving(
    make_agent: AgentFactory, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent()
    port = agi_port(agent)
    with caplog.at_level(logging.INFO):
        reply = await _raw(port, payload)
    assert b"SET VARIABLE" not in reply  # nothing was answered to a non-Asterisk peer
    await _still_serves(port)


async def test_hangup_mid_session_is_handled_and_the_server_keeps_serving(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent()
    port = agi_port(agent)
    # The caller hangs up right after our first command, as in fastagi-hangup-mid-session.jsonl.
    session = await run_session("127.0.0.1", port, args=["reminder", "0142123456"], hangup_after=1)
    assert session.closed_by_agent
    assert session.variables["TRUSTLINE_STATUS"] == "ok"
    await _still_serves(port)


async def test_a_stalled_peer_is_dropped_without_blocking_others(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    assert agent.agi is not None
    agent.agi._header_timeout = 0.3  # a peer that sends half a header block then nothing
    port = agi_port(agent)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"agi_network: yes\n")
    await writer.drain()
    await _still_serves(port)  # served while the stalled one is still open
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the stalled one gets closed
    writer.close()


async def test_a_peer_that_stops_replying_is_dropped_after_the_reply_time_limit(
    make_agent: AgentFactory,
) -> None:
    """Asterisk takes the answer's command and never replies (a hung channel thread): the
    session is closed once the reply time limit passes, not kept open for ever."""
    agent = await make_agent()
    assert agent.agi is not None
    agent.agi._reply_timeout = 0.3
    reader, writer = await asyncio.open_connection("127.0.0.1", agi_port(agent))
    writer.write(header_block("fastagi-outbound.jsonl", "outbound", ["reminder", "0142123456"]))
    await writer.drain()
    command = await asyncio.wait_for(reader.readline(), 5)
    assert command.startswith(b"SET VARIABLE ")
    start = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, no further command
    waited = asyncio.get_running_loop().time() - start
    assert 0.2 <= waited < 2.0, waited
    assert not agent.agi.connections
    writer.close()
    await _still_serves(agi_port(agent))


async def test_peer_outside_the_allowlist_is_refused(make_agent: AgentFactory) -> None:
    agent = await make_agent(agi_allow="10.9.9.9/32")
    reply = await _raw(
        agi_port(agent), header_block("fastagi-outbound.jsonl", "outbound", ["reminder", "1"])
    )
    assert reply == b""


class _SlowRoute:
    name = "slow"

    async def handle(self, request: AgiRequest) -> AgiAnswer:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        return AgiAnswer(
            (("TRUSTLINE_STATUS", "fallback"), ("TRUSTLINE_REASON", reason)), "fallback"
        )


async def test_deadline_answers_with_the_routes_failure_policy() -> None:
    server = FastAgiServer({"slow": _SlowRoute()}, deadline=0.05)
    await server.start("127.0.0.1", 0)
    try:
        session = await run_session("127.0.0.1", server.sockets[0][1], script="slow", args=[])
        assert session.variables == {"TRUSTLINE_STATUS": "fallback", "TRUSTLINE_REASON": "deadline"}
    finally:
        await server.stop()


async def test_one_variable_answer_is_one_round_trip_with_the_same_values(
    make_agent: AgentFactory,
) -> None:
    from agent import contract
    from tests.test_dialplan_contract import asterisk_cut

    agent = await make_agent()
    port = agi_port(agent)
    args = ["reminder", "0142123456"]
    five = await run_session("127.0.0.1", port, script="outbound", args=args)
    one = await run_session("127.0.0.1", port, script="outbound?answer=one", args=args)
    assert len(five.commands) == 5 and len(one.commands) == 1
    value = one.variables[contract.VAR_ANSWER]
    split = {
        name: asterisk_cut(value, "|", "5-" if i == 4 else str(i + 1))
        for i, name in enumerate(contract.OUTBOUND_ANSWER_FIELDS)
    }
    # The same answer (the second call took the next least-used number, nothing else changed).
    assert split[contract.VAR_STATUS] == five.variables[contract.VAR_STATUS] == "ok"
    assert split[contract.VAR_POOL] == five.variables[contract.VAR_POOL]
    assert split[contract.CALLERID_NAME] == five.variables[contract.CALLERID_NAME]
    assert split[contract.CALLERID_NUM].startswith("+3314")
    inbound = await run_session(
        "127.0.0.1",
        port,
        capture_name="fastagi-inbound.jsonl",
        script="inbound?answer=one",
        args=["0142000001", "A", "", "33612345678"],
    )
    assert len(inbound.commands) == 1
    verdict, score, reasons = inbound.variables[contract.VAR_ANSWER].split("|")
    assert verdict in contract.VERDICTS and 0 <= int(score) <= 100 and reasons


async def test_one_variable_fallback_at_the_deadline() -> None:
    class _Slow(_SlowRoute):
        def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
            return (
                super()
                .on_failure(request, reason)
                .packed(("TRUSTLINE_STATUS", "X", "TRUSTLINE_REASON"))
            )

    server = FastAgiServer({"slow": _Slow()}, deadline=0.05)
    await server.start("127.0.0.1", 0)
    try:
        session = await run_session("127.0.0.1", server.sockets[0][1], script="slow", args=[])
    finally:
        await server.stop()
    assert session.commands == ['SET VARIABLE TRUSTLINE_ANSWER "fallback||deadline"']


class _ThreeVariables:
    name = "three"

    async def handle(self, request: AgiRequest) -> AgiAnswer:
        return AgiAnswer((("A", "1"), ("B", "2"), ("C", "3")), "ok")

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        return AgiAnswer((("A", "fallback"),), "fallback")


async def _dribble(writer: asyncio.StreamWriter, data: bytes, size: int = 3) -> None:
    """Bytes in tiny TCP writes, as a loaded network may cut them."""
    for i in range(0, len(data), size):
        writer.write(data[i : i + size])
        await writer.drain()
        await asyncio.sleep(0)


async def _served_three(replies: list[bytes]) -> list[bytes]:
    """A session whose header block and replies arrive in pieces; what the agent sent."""
    server = FastAgiServer({"three": _ThreeVariables()}, deadline=1.0)
    await server.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0][1])
        await _dribble(writer, header_block("fastagi-outbound.jsonl", "three", []))
        sent: list[bytes] = []
        for reply in replies:
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:
                break
            sent.append(line)
            await _dribble(writer, reply)
        sent += (await asyncio.wait_for(reader.read(), 5)).splitlines(keepends=True)
        writer.close()
        return sent
    finally:
        await server.stop()


async def test_replies_in_pieces_with_trying_lines_and_a_usage_block_are_followed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO):
        sent = await _served_three(
            [
                b"100 result=0 Trying...\n200 result=1\n",
                b"HANGUP\n520-Invalid command syntax.  Proper usage follows:\n"
                b"Usage: SET VARIABLE\n520 End of proper usage.\n",
                b"200 result=1\n",
            ]
        )
    assert sent == [b'SET VARIABLE A "1"\n', b'SET VARIABLE B "2"\n', b'SET VARIABLE C "3"\n']
    # B's usage block is one refusal (warned), not a reply per line (that would be garbage).
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and "refused SET VARIABLE B" in warned[0]


async def test_a_511_reply_stops_the_commands() -> None:
    sent = await _served_three(
        [b"200 result=1\n", b"511 Command Not Permitted on a dead channel\n"]
    )
    assert sent == [b'SET VARIABLE A "1"\n', b'SET VARIABLE B "2"\n']


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_trustline_run_serves_calls_on_either_event_loop(
    tmp_path: Path, event_loop: str
) -> None:
    """`trustline run` as a sysadmin starts it (uvloop by default, or the standard loop)."""
    from tests.conftest import POOLS, write_config
    from tests.test_classic_agi import free_port

    port = free_port()
    env = {
        **os.environ,
        "TRUSTLINE_EVENT_LOOP": event_loop,
        "TRUSTLINE_CONFIG": str(write_config(tmp_path / "pools.toml", POOLS)),
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{port}",
        "TRUSTLINE_HTTP_LISTEN": "127.0.0.1:0",
        "TRUSTLINE_RECORDINGS_DIR": str(tmp_path / "monitor"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "run", stderr=subprocess.DEVNULL, env=env
    )
    try:
        async with asyncio.timeout(60):
            while True:
                try:
                    session = await run_session("127.0.0.1", port, args=["reminder", "0142123456"])
                    break
                except OSError:  # not listening yet
                    await asyncio.sleep(0.1)
        assert session.variables["TRUSTLINE_STATUS"] == "ok" and session.closed_by_agent
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    assert proc.returncode == 0
