"""trustline-agi as Asterisk runs it: one process per call, AGI over its stdin/stdout.

A fake Asterisk writes the environment block captured from a real PBX (as a classic AGI
script receives it) into the script's stdin and answers its commands the way Asterisk does;
the agent is a real one on a loopback port.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import captured_headers, run_session

SCRIPT = str(Path(sys.executable).with_name("trustline-agi"))
CALLEE = "0612345678"

ONE_NUMBER = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
fallback = "+33142000001"
numbers = [ { number = "+33142000001", name = "Clinique StMarc" } ]
"""


def classic_environment(capture: str, args: list[str]) -> bytes:
    """The captured header block as Asterisk gives it to AGI(trustline-agi,args...)."""
    lines = []
    for line in captured_headers(capture):
        key = line.split(":", 1)[0]
        if key.startswith(("agi_network", "agi_arg_")):
            continue  # a classic script gets no agi_network lines
        lines.append("agi_request: trustline-agi\n" if key == "agi_request" else line)
    lines += [f"agi_arg_{i}: {arg}\n" for i, arg in enumerate(args, 1)]
    return ("".join(lines) + "\n").encode("latin-1")


def agi_args(text: str) -> list[str]:
    """Arguments as Asterisk's parse_args (res/res_agi.c) reads them: whitespace separates
    outside quotes, a double quote toggles quoting anywhere, a backslash escapes."""
    args: list[str] = []
    current: list[str] | None = None
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
            current = current if current is not None else []
            continue
        elif ch == '"':
            quoted = not quoted
            current = current if current is not None else []
            continue
        elif ch in " \t" and not quoted:
            if current is not None:
                args.append("".join(current))
                current = None
            continue
        current = current if current is not None else []
        current.append(ch)
    if current is not None:
        args.append("".join(current))
    return args


@dataclass
class Call:
    returncode: int
    variables: dict[str, str]
    commands: list[str]
    stderr: str


@dataclass
class FakeAsterisk:
    """Channel variables, globals and AstDB as the script may read and set them."""

    globals: dict[str, str] = field(default_factory=dict)
    astdb: dict[str, str] = field(default_factory=dict)

    def answer(self, line: str, variables: dict[str, str]) -> bytes:
        for command, handler in (
            ("SET VARIABLE ", self._set),
            ("GET VARIABLE ", self._get),
            ("DATABASE GET ", self._db_get),
        ):
            if line.startswith(command):
                return handler(agi_args(line[len(command) :]), variables)
        return b"510 Invalid or unknown command\n"

    def _set(self, args: list[str], variables: dict[str, str]) -> bytes:
        variables[args[0]] = args[1]
        return b"200 result=1\n"

    def _get(self, args: list[str], variables: dict[str, str]) -> bytes:
        value = variables.get(args[0], self.globals.get(args[0]))
        return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()

    def _db_get(self, args: list[str], variables: dict[str, str]) -> bytes:
        value = self.astdb.get(f"{args[0]}/{args[1]}")
        return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()

    async def call(
        self,
        args: list[str],
        *,
        capture: str = "fastagi-outbound.jsonl",
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> Call:
        proc = await asyncio.create_subprocess_exec(
            SCRIPT,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TRUSTLINE_CLASSIC_DEADLINE_MS": "300", **(env or {})},
        )
        assert proc.stdin and proc.stdout and proc.stderr
        proc.stdin.write(stdin if stdin is not None else classic_environment(capture, args))
        if stdin is not None:
            proc.stdin.close()  # raw bytes, then the pipe ends: nothing will answer
        variables: dict[str, str] = {}
        commands: list[str] = []
        async with asyncio.timeout(20):
            while line := await proc.stdout.readline():
                commands.append(line.decode().rstrip("\n"))
                proc.stdin.write(self.answer(commands[-1], variables))
                await proc.stdin.drain()
            if not proc.stdin.is_closing():
                proc.stdin.close()
            stderr = (await proc.stderr.read()).decode()
            returncode = await proc.wait()
        return Call(returncode, variables, commands, stderr)


async def test_outbound_sets_the_same_variables_as_fastagi(make_agent: AgentFactory) -> None:
    agent = await make_agent(ONE_NUMBER)
    port = agi_port(agent)
    fastagi = await run_session("127.0.0.1", port, args=["reminder", CALLEE, "CASE-7"])
    # The agent's address from the dialplan's global, as a PBX admin sets it once.
    asterisk = FakeAsterisk(globals={"TRUSTLINE_AGI_URL": f"agi://127.0.0.1:{port}"})
    classic = await asterisk.call(["outbound", "reminder", CALLEE, "CASE-7"])
    assert classic.returncode == 0, classic.stderr
    assert classic.variables == fastagi.variables
    assert classic.variables["CALLERID(num)"] == "+33142000001"
    assert classic.variables["TRUSTLINE_STATUS"] == "ok"
    assert CALLEE not in classic.stderr


async def test_inbound_sets_the_same_variables_as_fastagi(make_agent: AgentFactory) -> None:
    agent = await make_agent()
    port = agi_port(agent)
    args = ["0142000001", "TN-Validation-Passed-A"]
    fastagi = await run_session(
        "127.0.0.1", port, capture_name="fastagi-inbound.jsonl", script="inbound", args=args
    )
    classic = await FakeAsterisk().call(
        ["inbound", *args],
        capture="fastagi-inbound.jsonl",
        env={"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{port}"},
    )
    assert classic.returncode == 0, classic.stderr
    assert set(classic.variables) == {"TRUSTLINE_VERDICT", "TRUSTLINE_SCORE", "TRUSTLINE_REASONS"}
    assert classic.variables == fastagi.variables


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_agent_down_falls_back_to_astdb_then_the_global() -> None:
    down = {"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{free_port()}"}
    asterisk = FakeAsterisk(
        globals={"TRUSTLINE_FALLBACK_CID": "+33142000009"},
        astdb={"trustline/fallback/reminder": "+33142000005"},
    )
    from_astdb = await asterisk.call(["outbound", "reminder", CALLEE], env=down)
    assert from_astdb.returncode == 0
    assert from_astdb.variables == {
        "CALLERID(num)": "+33142000005",
        "TRUSTLINE_STATUS": "fallback",
        "TRUSTLINE_POOL": "",
        "TRUSTLINE_REASON": "agent_unreachable",
    }
    assert "unreachable" in from_astdb.stderr and CALLEE not in from_astdb.stderr

    from_global = await asterisk.call(["outbound", "confirmation", CALLEE], env=down)
    assert from_global.variables["CALLERID(num)"] == "+33142000009"
    assert from_global.variables["TRUSTLINE_STATUS"] == "fallback"


async def test_a_silent_agent_gets_the_fallback_within_the_deadline() -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        held.append(writer)  # a hung agent: the connection opens, no command ever comes

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        asterisk = FakeAsterisk(astdb={"trustline/fallback/reminder": "+33142000005"})
        env = {"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{port}"}
        outbound = await asterisk.call(["outbound", "reminder", CALLEE], env=env)
        inbound = await asterisk.call(
            ["inbound", "0142000001"], capture="fastagi-inbound.jsonl", env=env
        )
    finally:
        for writer in held:
            writer.close()
        server.close()
    assert outbound.variables["CALLERID(num)"] == "+33142000005"
    assert outbound.variables["TRUSTLINE_STATUS"] == "fallback"
    assert "did not answer in time" in outbound.stderr
    assert inbound.variables == {
        "TRUSTLINE_VERDICT": "allow",
        "TRUSTLINE_SCORE": "",
        "TRUSTLINE_REASONS": "",
    }


async def test_an_unknown_route_is_a_usage_error_and_touches_nothing() -> None:
    call = await FakeAsterisk().call(["outgoing", "reminder", CALLEE])
    assert call.returncode == 64
    assert call.commands == []
    assert "outbound" in call.stderr and "inbound" in call.stderr


async def test_garbage_on_stdin_is_refused_clearly() -> None:
    huge = b"agi_request: trustline-agi\nagi_callerid: " + b"9" * 10000 + b"\n\n"
    call = await FakeAsterisk().call(["outbound", "reminder"], stdin=huge)
    assert call.returncode == 1
    assert call.commands == []
    assert "not an AGI environment" in call.stderr and "longer than" in call.stderr

    cut = await FakeAsterisk().call(["outbound", "reminder"], stdin=b"agi_request: trustline-agi\n")
    assert cut.returncode == 1 and "closed before the end" in cut.stderr


async def scripted_agent(commands: list[str]) -> tuple[asyncio.Server, list[bytes]]:
    """An agent that sends these commands, reads each reply, then hangs (never closes)."""
    replies: list[bytes] = []
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.readuntil(b"\n\n")
        for command in commands:
            writer.write(command.encode() + b"\n")
            replies.append(await reader.readline())
        await reader.read()  # silent until the script gives up and closes

    return await asyncio.start_server(serve, "127.0.0.1", 0), replies


async def test_an_answer_cut_short_is_undone_by_the_fallback() -> None:
    server, replies = await scripted_agent(
        ['SET VARIABLE CALLERID(num) "+33142000002"', 'SET VARIABLE CALLERID(name) "Half"']
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        call = await FakeAsterisk(astdb={"trustline/fallback/reminder": "+33142000005"}).call(
            ["outbound", "reminder", CALLEE], env={"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{port}"}
        )
    assert replies == [b"200 result=1\n", b"200 result=1\n"]  # Asterisk's replies reached it
    assert call.variables["CALLERID(num)"] == "+33142000005"
    assert call.variables["CALLERID(name)"] == "Placeholder"  # the channel's own, from the env
    assert call.variables["TRUSTLINE_STATUS"] == "fallback"


async def test_an_answer_complete_but_for_the_close_is_kept() -> None:
    server, _ = await scripted_agent(
        [
            'SET VARIABLE CALLERID(num) "+33142000002"',
            'SET VARIABLE TRUSTLINE_STATUS "ok"',
            'SET VARIABLE TRUSTLINE_POOL "reminders"',
        ]
    )
    port = server.sockets[0].getsockname()[1]
    async with server:
        call = await FakeAsterisk(astdb={"trustline/fallback/reminder": "+33142000005"}).call(
            ["outbound", "reminder", CALLEE], env={"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{port}"}
        )
    assert call.returncode == 0
    assert call.variables == {
        "CALLERID(num)": "+33142000002",
        "TRUSTLINE_STATUS": "ok",
        "TRUSTLINE_POOL": "reminders",
    }
