"""End to end: a FastAGI decision, the call's AMI events replayed, the outcome stored, and
the answer rate printed by ``trustline stats`` (the real CLI, in its own process)."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from agent.ami.link import AmiLink
from tests.ami_replay import ReplayAmiServer, events
from tests.conftest import agi_port
from tests.fake_asterisk import run_session
from tests.test_ami_link import SCENARIOS, eventually
from tests.test_cli import trustline


async def test_decision_then_ami_events_give_an_answer_rate(make_agent, tmp_path: Path) -> None:
    agent = await make_agent()
    async with ReplayAmiServer() as server:
        recordings: list[tuple[str, str]] = []

        async def on_recording(uniqueid: str, filename: str) -> None:
            recordings.append((uniqueid, filename))

        settings = agent.settings.model_copy(
            update={"ami_port": server.port, "ami_user": "trustline"}
        )
        settings = settings.model_copy(update={"ami_secret": _secret("capture-secret")})
        link = AmiLink(
            settings, agent.db, agent.clock, agent.outbound, on_recording, CollectorRegistry()
        )
        await link.start()
        try:
            await eventually(lambda: _true(link.resyncs >= 1))
            handed: dict[str, str] = {}
            for capture in ("ami-answered", "ami-busy"):
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
                await server.play(events(capture))
            for uniqueid in handed:
                await eventually(lambda u=uniqueid: _ended(agent, u))
        finally:
            await link.stop()

    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    day = "2026-11-17"  # the conftest clock's Paris day
    table = await trustline("stats", "--from", day, *where)
    assert table.returncode == 0, table.stderr
    line = next(ln for ln in table.stdout.splitlines() if "reminders" in ln)
    assert line.split()[:5] == [day, "reminders", "2", "1", "1"]  # dialled, answered, busy
    assert "50%" in line and "20s" in line

    per_number = await trustline("stats", "--from", day, "--by-number", "--json", *where)
    rows = [json.loads(ln) for ln in per_number.stdout.splitlines()]
    by_number = {r["number"]: r for r in rows}
    answered_with = handed[SCENARIOS["ami-answered"][0]]
    assert by_number[answered_with]["answered"] == 1
    assert by_number[answered_with]["talk_seconds"] == 20
    assert sum(r["dialled"] for r in rows) == 2
    assert recordings == [(u, f"/var/spool/asterisk/monitor/{u}.wav") for u in handed]


async def test_stats_without_outcomes_says_so(make_agent, tmp_path: Path) -> None:
    await make_agent()
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    empty = await trustline("stats", "--days", "3", *where)
    assert empty.returncode == 0
    assert "no call outcomes in that period" in empty.stdout
    bad = await trustline("stats", "--from", "17/11/2026", *where)
    assert bad.returncode == 64 and "YYYY-MM-DD" in bad.stderr


def _secret(value: str):  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    return SecretStr(value)


async def _true(value: bool) -> bool:
    return value


async def _ended(agent, uniqueid: str) -> bool:  # type: ignore[no-untyped-def]
    row = await agent.db.fetchone(
        "SELECT 1 FROM call_audit WHERE uniqueid = ? AND outcome IS NOT NULL"
        " AND cdr_disposition IS NOT NULL",
        (uniqueid,),
    )
    return row is not None
