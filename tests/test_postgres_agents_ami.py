"""Two real agent processes on one PostgreSQL schema, each with its AMI link to its own replay
AMI server, both given the same captured SpamReport UserEvent: the report counts once.

This is a call centre whose agents all log in to the PBX that took the call (or to two PBXs
that forward the same event): every AMI session receives the UserEvent, and one patient
pressing "report" once must never count twice towards the number's quarantine threshold.
"""

from __future__ import annotations

import functools
from pathlib import Path

import asyncpg

from tests.ami_replay import ReplayAmiServer, events, headers, with_header
from tests.conftest import POOLS, write_config
from tests.postgres_schema import fresh_schema
from tests.test_ami_link import eventually
from tests.test_postgres_agents import running_agent

OURS = "+33142000002"  # one of the pool's numbers; quarantined at 2 reports a day
STRANGER = "+33142009999"  # not ours: recorded (as a keyed hash) and otherwise ignored


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _two(url: str, sql: str) -> int | None:
    count = await _count(url, sql)
    return count if count >= 2 else None


async def test_one_spam_report_seen_by_two_agents_ami_links_counts_once(tmp_path: Path) -> None:
    config = write_config(tmp_path / "pools.toml", POOLS)
    report = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    shared = with_header(report, "Number", OURS)
    shared_id = headers(shared)["Uniqueid"]
    async for url in fresh_schema():
        common = {
            "TRUSTLINE_CONFIG": str(config),
            "TRUSTLINE_DATABASE_URL": url,
            "TRUSTLINE_CALLEE_KEY_FILE": str(tmp_path / "callee.key"),
            "TRUSTLINE_AMI_HOST": "127.0.0.1",
            "TRUSTLINE_AMI_USER": "trustline",
            "TRUSTLINE_AMI_SECRET": "capture-secret",
            "TRUSTLINE_LOG_LEVEL": "WARNING",
        }
        async with ReplayAmiServer() as pbx_a, ReplayAmiServer() as pbx_b:
            servers = {"a": pbx_a, "b": pbx_b}
            async with (
                running_agent(
                    {
                        **common,
                        "TRUSTLINE_DATA_DIR": str(tmp_path / "a"),
                        "TRUSTLINE_AMI_PORT": str(pbx_a.port),
                    }
                ),
                running_agent(
                    {
                        **common,
                        "TRUSTLINE_DATA_DIR": str(tmp_path / "b"),
                        "TRUSTLINE_AMI_PORT": str(pbx_b.port),
                    }
                ),
            ):
                for server in servers.values():
                    # Logged in and re-synced (the channel list asked for): events are read.
                    resynced = functools.partial(server.actions_named, "CoreShowChannels")
                    await server.wait_for(resynced, 30)
                for name, server in servers.items():
                    # The shared report, then a marker report only this agent sees (a number
                    # not ours, its own Uniqueid): each link handles its events in order, so
                    # once both markers are stored both agents have handled the shared one.
                    marker = with_header(shared, "Uniqueid", f"marker-{name}")
                    marker = with_header(marker, "Number", STRANGER)
                    await server.play([shared, marker])
                both = functools.partial(
                    _two, url, "SELECT COUNT(*) FROM spam_reports WHERE ours = 0"
                )
                assert await eventually(both, within=20) == 2
        conn = await asyncpg.connect(url)
        try:
            ours = await conn.fetch(
                "SELECT event_id, source FROM spam_reports WHERE number = $1", OURS
            )
            quarantined = await conn.fetchval(
                "SELECT COUNT(*) FROM quarantines WHERE number = $1", OURS
            )
        finally:
            await conn.close()
        # One patient, one press: one report, under the quarantine threshold of 2.
        assert [(r["event_id"], r["source"]) for r in ours] == [(shared_id, "ivr")]
        assert quarantined == 0
