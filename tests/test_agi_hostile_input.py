"""Hostile and careless input on the FastAGI socket (issue 16, items 1 and 2), over real TCP.

Asterisk writes the header block unescaped: a caller name holding line breaks splits into extra
lines. These tests send exactly those bytes and check what a caller would notice: who gets
blocked, which caller ID goes out, that no session is dropped and nothing logs a traceback.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent import contract
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import header_block, run_session
from tests.test_dialplan_contract import asterisk_filter

BLOCKING_POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc" },
]

[screening]
block = ["+447012345678"]
"""

BLOCKED = "+447012345678"
PATIENT = "+33612345678"

HOSTILE_NAMES = [
    pytest.param(f"Bob\nagi_callerid: {PATIENT}", id="forged-callerid"),
    pytest.param(f"Bob\nagi_arg_4: {PATIENT}", id="forged-fourth-argument"),
    pytest.param(f"Bob\n\nagi_callerid: {PATIENT}\n", id="blank-line-then-forged-callerid"),
    pytest.param("Bob\r\nnot a header at all\n: \n::", id="stray-garbage"),
    pytest.param(
        "Bob\nagi_callingpres: 0\nagi_arg_1: 0142000001\nagi_arg_2: A\nagi_arg_3: passed\n"
        f"agi_arg_4: {PATIENT}",
        id="forged-argument-run",
    ),
]


async def screen(port: int, caller: str, name: str) -> dict[str, str]:
    """One inbound call the way the subroutine places it (caller filtered as 4th argument)."""
    session = await run_session(
        "127.0.0.1",
        port,
        capture_name="fastagi-inbound.jsonl",
        script="inbound",
        args=["0142000001", "", "", asterisk_filter("0-9+", caller)],
        overrides={"agi_callerid": caller, "agi_calleridname": name},
    )
    assert session.closed_by_agent
    return session.variables


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_blocklisted_caller_with_a_hostile_name_is_still_blocked(
    make_agent: AgentFactory, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent(BLOCKING_POOLS)
    with caplog.at_level(logging.INFO):
        answer = await screen(agi_port(agent), BLOCKED, name)
    assert answer[contract.VAR_VERDICT] == contract.VERDICT_BLOCK
    assert "blocklist" in answer[contract.VAR_REASONS].split(",")
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_hostile_name_cannot_make_a_patient_look_blocked(
    make_agent: AgentFactory, name: str
) -> None:
    agent = await make_agent(BLOCKING_POOLS.replace(BLOCKED, PATIENT))
    # The forged lines name the blocked patient number; the real caller is someone else.
    answer = await screen(agi_port(agent), "+33698765432", name)
    assert answer[contract.VAR_VERDICT] == contract.VERDICT_ALLOW


async def test_a_dialplan_of_the_previous_release_still_screens_the_first_callerid(
    make_agent: AgentFactory,
) -> None:
    # Three arguments (no caller number): the header is used, and its first value wins.
    agent = await make_agent(BLOCKING_POOLS)
    session = await run_session(
        "127.0.0.1",
        agi_port(agent),
        capture_name="fastagi-inbound.jsonl",
        script="inbound",
        args=["0142000001", "", ""],
        overrides={"agi_callerid": BLOCKED, "agi_calleridname": f"x\nagi_callerid: {PATIENT}"},
    )
    assert session.variables[contract.VAR_VERDICT] == contract.VERDICT_BLOCK


@pytest.mark.parametrize(
    "name",
    [
        "Dr\nHouse",
        "Dr\n\nHouse\n",
        "x\nagi_arg_2: 0472000000\nagi_arg_1: gardening",
        "x\r\nagi_network_script: nosuch",
    ],
)
async def test_an_outbound_call_with_a_broken_name_still_gets_ok(
    make_agent: AgentFactory, name: str
) -> None:
    agent = await make_agent()
    session = await run_session(
        "127.0.0.1",
        agi_port(agent),
        script="outbound",
        args=["reminder", "0142123456"],
        overrides={"agi_calleridname": name},
    )
    assert session.variables[contract.VAR_STATUS] == contract.STATUS_OK
    # The callee of the argument (Paris) chose a Paris number, not the forged Lyon callee.
    assert session.variables[contract.CALLERID_NUM].startswith("+3314")


async def _answer_with(port: int, reply: bytes) -> tuple[list[str], bytes]:
    """Send an outbound header block, answer the agent's first command with ``reply``;
    return the commands the agent sent and what else it sent until it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(header_block("fastagi-outbound.jsonl", "outbound", ["reminder", "0142123456"]))
        first = await asyncio.wait_for(reader.readline(), 5)
        writer.write(reply)
        if not reply:
            writer.write_eof()  # Asterisk went away without a word
        await writer.drain()
        try:
            rest = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            rest = b""  # closed with our unread junk in its buffer: the kernel resets
        return [first.decode()], rest
    finally:
        writer.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("²00 result=1\n".encode(), id="superscript-digit-status"),
        pytest.param("٢٠٠ result=1\n".encode(), id="arabic-indic-digits"),
        pytest.param(b"\xff\xfe garbage\n", id="binary-garbage"),
        pytest.param(b"20\n", id="short-status"),
        pytest.param(b"200 result=" + b"9" * 70_000 + b"\n", id="huge-line"),
        pytest.param(b"520-Invalid\n" * 300, id="endless-usage-block"),
        pytest.param(b"", id="closed-without-reply"),
    ],
)
async def test_a_malformed_reply_ends_the_session_quietly(
    make_agent: AgentFactory, reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent()
    port = agi_port(agent)
    with caplog.at_level(logging.DEBUG):
        first, rest = await _answer_with(port, reply)
    assert first == ['SET VARIABLE CALLERID(num) "+33142000001"\n']
    # The agent stops there: the subroutine sees no TRUSTLINE_STATUS and keeps its preset.
    assert b"TRUSTLINE_STATUS" not in rest
    assert not [
        r
        for r in caplog.records
        if r.exc_info or (r.levelno >= logging.ERROR and r.name.startswith("agent.agi"))
    ]
    again = await run_session("127.0.0.1", port, args=["reminder", "0142123456"])
    assert again.variables[contract.VAR_STATUS] == contract.STATUS_OK
