"""End to end: a FastAGI decision, the call's AMI events replayed, the outcome stored, and
the answer rate printed by ``trustline stats`` (the real CLI, in its own process)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import aiohttp

from agent.app import Agent
from tests.ami_replay import ReplayAmiServer, events, with_header
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import run_session
from tests.test_ami_link import SCENARIOS, eventually
from tests.test_cli import trustline


async def test_decision_then_ami_events_give_an_answer_rate(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    async with ReplayAmiServer() as server:
        agent = await make_agent(
            ami_port=server.port,
            ami_user="trustline",
            ami_secret="capture-secret",
            recordings_dir=tmp_path / "monitor",
        )
        link = agent.ami
        assert link is not None
        await eventually(lambda: _true(link.resyncs >= 1))
        handed: dict[str, str] = {}
        for capture in ("ami-answered", "ami-busy", "ami-noanswer"):
            uniqueid, _ = SCENARIOS[capture]
            # Asterisk runs the outbound AGI on the channel, with its uniqueid...
            session = await run_session(
                "127.0.0.1",
                agi_port(agent),
                args=["reminder", "0142123456"],
                overrides={"agi_uniqueid": uniqueid},
            )
            handed[uniqueid] = session.variables["CALLERID(num)"]
            # ...then the call goes on and AMI reports how it went.
            stream = events(capture)
            if capture == "ami-noanswer":
                # Our side hangs up while the callee's phone rings: DialEnd CANCEL on our
                # channel. That says nothing about the number's answer rate.
                stream = [_cancelled(e, uniqueid) for e in stream]
            await server.play(stream)
        for uniqueid in handed:
            await eventually(functools.partial(_ended, agent, uniqueid))
        # The running agent's /metrics counts outcomes per pool.
        metrics = agent.metrics.render().decode()
        assert 'trustline_call_outcomes_total{outcome="answered",pool="reminders"} 1.0' in metrics
        ready = await _readyz(agent)
        assert ready["checks"]["ami"]["ok"] is True
        assert ready["checks"]["ami"]["detail"].startswith("AMI up: ")
        # Asterisk goes away: /readyz says so, with the reason.
        await server.drop()
        await eventually(lambda: _not_ready(agent))

    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    day = "2026-11-17"  # the conftest clock's Paris day
    table = await trustline("stats", "--from", day, *where)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "reminders" in ln)
    assert line.split()[:5] == [day, "reminders", "2", "1", "1"]  # dialled, answered, busy
    assert line.split()[-4:] == ["0", "50%", "20s", "1"]  # failed, rate, talk, unrated
    assert table.stdout.splitlines()[0].split()[-1] == "UNRATED"

    per_number = await trustline("stats", "--from", day, "--by-number", "--json", *where)
    rows = [json.loads(ln) for ln in per_number.stdout.splitlines()]
    by_number = {r["number"]: r for r in rows}
    answered_with = handed[SCENARIOS["ami-answered"][0]]
    assert by_number[answered_with]["answered"] == 1
    assert by_number[answered_with]["talk_seconds"] == 20
    assert sum(r["dialled"] for r in rows) == 2
    assert sum(r["failed"] for r in rows) == 0
    assert by_number[handed[SCENARIOS["ami-noanswer"][0]]]["unseen"] == 1


async def test_stats_without_outcomes_says_so(make_agent: AgentFactory, tmp_path: Path) -> None:
    await make_agent()
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    empty = await trustline("stats", "--days", "3", *where)
    assert empty.returncode == 0
    assert "no call outcomes in that period" in empty.stdout
    bad = await trustline("stats", "--from", "17/11/2026", *where)
    assert bad.returncode == 64 and "YYYY-MM-DD" in bad.stderr


def _cancelled(message: bytes, uniqueid: str) -> bytes:
    """The captured DialEnd on our channel, as if we had cancelled the dial."""
    ours = f"\r\nUniqueid: {uniqueid}\r\n".encode()
    if message.startswith(b"Event: DialEnd\r\n") and ours in message:
        return with_header(message, "DialStatus", "CANCEL")
    return message


async def _readyz(agent: Agent) -> dict[str, Any]:
    assert agent.http_address is not None
    host, port = agent.http_address
    async with aiohttp.ClientSession() as http, http.get(f"http://{host}:{port}/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def _not_ready(agent: Agent) -> bool:
    ami = (await _readyz(agent))["checks"]["ami"]
    return ami["ok"] is False and "AMI down: " in ami["detail"]


async def _true(value: bool) -> bool:
    return value


async def _ended(agent: Agent, uniqueid: str) -> bool:
    assert agent.db is not None
    row = await agent.db.fetchone(
        "SELECT 1 FROM call_audit WHERE uniqueid = ? AND outcome IS NOT NULL"
        " AND cdr_disposition IS NOT NULL",
        (uniqueid,),
    )
    return row is not None
