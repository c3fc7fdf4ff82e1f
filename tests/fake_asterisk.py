"""A fake Asterisk for FastAGI tests, speaking the wire protocol from the real captures.

It opens a TCP connection to the agent, sends the header block recorded from a real Asterisk
(tests/fixtures/asterisk-captures/fastagi-*.jsonl), with the script path and arguments of the test,
then answers every command the way Asterisk did in the capture: ``200 result=1`` for SET
VARIABLE, ``200 result=1 (value)`` for GET VARIABLE of what was set, 510 for unknown commands.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from tests.captures import capture_path


def capture(name: str) -> list[dict[str, object]]:
    with open(capture_path(name), encoding="latin-1") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def captured_headers(name: str) -> list[str]:
    """The header lines Asterisk sent (each ending in \\n), without the blank line."""
    lines = []
    for record in capture(name):
        if record["dir"] != "asterisk":
            break
        data = str(record["data"])
        if data == "\n":
            break
        lines.append(data)
    return lines


def header_block(
    name: str,
    script: str | None = None,
    args: list[str] | None = None,
    overrides: dict[str, str] | None = None,
) -> bytes:
    """The captured header block with this test's script path, arguments and overrides."""
    out = []
    for line in captured_headers(name):
        key = line.split(":", 1)[0]
        if key.startswith("agi_arg_") and args is not None:
            continue
        if script is not None and key == "agi_network_script":
            line = f"agi_network_script: {script}\n"
        elif script is not None and key == "agi_request":
            line = f"agi_request: agi://127.0.0.1:4573/{script}\n"
        elif overrides and key in overrides:
            line = f"{key}: {overrides[key]}\n"
        out.append(line)
    for i, arg in enumerate(args or [], 1):
        out.append(f"agi_arg_{i}: {arg}\n")
    out.append("\n")
    return "".join(out).encode("latin-1")


_SET = re.compile(r'^SET VARIABLE (\S+) "((?:[^"\\]|\\.)*)"$')


@dataclass
class Session:
    commands: list[str] = field(default_factory=list)  # exact lines the agent sent
    variables: dict[str, str] = field(default_factory=dict)
    closed_by_agent: bool = False


async def run_session(
    host: str,
    port: int,
    *,
    capture_name: str = "fastagi-outbound.jsonl",
    script: str | None = "outbound",
    args: list[str] | None = None,
    overrides: dict[str, str] | None = None,
    hangup_after: int | None = None,
    timeout: float = 10.0,
) -> Session:
    """One FastAGI session as Asterisk runs it; returns what the agent did."""
    reader, writer = await asyncio.open_connection(host, port)
    session = Session()
    try:
        writer.write(header_block(capture_name, script, args, overrides))
        await writer.drain()
        while True:
            raw = await asyncio.wait_for(reader.readline(), timeout)
            if not raw:
                session.closed_by_agent = True
                break
            line = raw.decode("utf-8").rstrip("\n")
            session.commands.append(line)
            if hangup_after is not None and len(session.commands) == hangup_after:
                writer.write(b"HANGUP\n")  # as Asterisk does when the caller hangs up
            match = _SET.match(line)
            if match:
                value = re.sub(r"\\(.)", r"\1", match.group(2))
                session.variables[match.group(1)] = value
                writer.write(b"200 result=1\n")
            elif line.startswith("GET VARIABLE "):
                name = line[len("GET VARIABLE ") :]
                if name in session.variables:
                    writer.write(f"200 result=1 ({session.variables[name]})\n".encode())
                else:
                    writer.write(b"200 result=0\n")
            else:
                writer.write(b"510 Invalid or unknown command\n")
            await writer.drain()
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return session
