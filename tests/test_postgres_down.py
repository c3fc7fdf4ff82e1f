"""PostgreSQL not there when the agent starts: it starts anyway, answers every call within the
deadline, says why on /readyz, and serves from the store once the server is reachable. Calls
get the pool's fallback, and opt-outs hold from the agent's copy of the set; an agent that
never read the set (first start) lets no call to a patient out until it has.

The database sits behind a TCP forwarder on a port that is closed at first (the server is
"down"); opening the forwarder brings it "up", without touching the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from tests.conftest import write_config
from tests.fake_asterisk import Session, run_session
from tests.postgres_schema import fresh_schema
from tests.test_postgres_agents import POOL, free_port, running_agent


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_forwarder(port: int, to_host: str, to_port: int) -> asyncio.Server:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(to_host, to_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(forward, "127.0.0.1", port)


class Forwarder:
    """A TCP forwarder to the database that can be taken down (every connection cut at once,
    as when PostgreSQL is killed) and brought back up on the same port."""

    def __init__(self, port: int, to_host: str, to_port: int) -> None:
        self.port, self._to = port, (to_host, to_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*self._to)
            self._open |= {writer, up_writer}
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        self._server = await asyncio.start_server(forward, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()


def behind_forwarder(url: str, config: Path, data: Path) -> tuple[Forwarder, dict[str, str]]:
    """A forwarder (still down) to the database at ``url``, and an agent's env using it."""
    real = urlsplit(url)
    forwarder = Forwarder(free_port(), real.hostname or "", real.port or 5432)
    via = real._replace(netloc=f"{real.username}@127.0.0.1:{forwarder.port}").geturl()
    env = {"TRUSTLINE_CONFIG": str(config), "TRUSTLINE_DATA_DIR": str(data)}
    return forwarder, {**env, "TRUSTLINE_DATABASE_URL": via}


async def traffic_with_outage(
    agi: int, forwarder: Forwarder, *, total: int, callers: int
) -> list[Session]:
    """``callers`` concurrent callers place ``total`` calls; the database goes down after a
    quarter of them and comes back after half."""
    sessions: list[Session] = []
    quarter, half = asyncio.Event(), asyncio.Event()
    queue = iter(range(total))

    async def caller() -> None:
        for _ in queue:
            sessions.append(await run_session("127.0.0.1", agi, args=["reminder", "0142123456"]))
            if len(sessions) >= total // 4:
                quarter.set()
            if len(sessions) >= total // 2:
                half.set()

    async def outage() -> None:
        await quarter.wait()
        await forwarder.down()  # the database is gone, every connection cut
        await half.wait()
        await forwarder.up()

    await asyncio.gather(outage(), *(caller() for _ in range(callers)))
    return sessions


async def readyz(http: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{http}/readyz") as resp,
    ):
        return resp.status, await resp.json()


async def test_agent_starts_without_postgres_serves_fallbacks_then_reconnects(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pools.toml", POOL)
    async for url in fresh_schema():
        real = urlsplit(url)
        port = free_port()  # nothing listens here yet: the database is down
        down_url = real._replace(netloc=f"{real.username}@127.0.0.1:{port}").geturl()
        env = {
            "TRUSTLINE_CONFIG": str(config),
            "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
            "TRUSTLINE_DATABASE_URL": down_url,
        }
        forwarder = None
        try:
            async with running_agent(env) as (agi, http):
                status, body = await readyz(http)
                assert status == 503
                store = body["checks"]["store"]  # type: ignore[index]  # JSON body: dict[str, object]
                assert "cannot connect" in store["detail"]
                assert f"127.0.0.1:{port}" in store["detail"]

                # Opt-outs never read (no copy on a first start): no patient is called; the
                # dialer is told to try again in a minute.
                sessions = await asyncio.gather(
                    *(
                        run_session("127.0.0.1", agi, args=["reminder", "0142123456"])
                        for _ in range(20)
                    )
                )
                for s in sessions:
                    assert s.variables["TRUSTLINE_STATUS"] == "outside_window"
                    assert s.variables["TRUSTLINE_REASON"] == "optouts_unknown"
                    assert "TRUSTLINE_NEXT_WINDOW" in s.variables
                    assert not s.variables.get("CALLERID(num)")

                forwarder = await start_forwarder(port, real.hostname or "", real.port or 5432)
                for _ in range(300):
                    status, body = await readyz(http)
                    session = await run_session("127.0.0.1", agi, args=["reminder", "0142123456"])
                    if status == 200 and session.variables["TRUSTLINE_STATUS"] == "ok":
                        break
                    await asyncio.sleep(0.1)
                assert status == 200, body
                assert session.variables["TRUSTLINE_STATUS"] == "ok"
                assert session.variables["CALLERID(num)"].startswith("+3314200000")
        finally:
            if forwarder is not None:
                forwarder.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(forwarder.wait_closed(), 5)


async def test_postgres_lost_mid_traffic_every_call_answered_no_ok_count_lost_or_doubled(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pools.toml", POOL)
    async for url in fresh_schema():
        forwarder, env = behind_forwarder(url, config, tmp_path / "data")
        env["TRUSTLINE_LOG_LEVEL"] = "WARNING"
        await forwarder.up()
        try:
            async with running_agent(env) as (agi, _):
                sessions = await traffic_with_outage(agi, forwarder, total=400, callers=20)
        finally:
            await forwarder.down()
        statuses = Counter(s.variables.get("TRUSTLINE_STATUS") for s in sessions)
        assert sum(statuses.values()) == 400 and None not in statuses  # every call answered
        assert statuses["ok"] > 0 and set(statuses) - {"ok"} <= {"exhausted", "fallback", "error"}
        granted = Counter(
            s.variables["CALLERID(num)"]
            for s in sessions
            if s.variables["TRUSTLINE_STATUS"] == "ok"
        )
        conn = await asyncpg.connect(url)
        try:
            stored = dict(await conn.fetch("SELECT number, used FROM daily_usage"))
            audited = await conn.fetchval("SELECT COUNT(*) FROM call_audit WHERE status = 'ok'")
        finally:
            await conn.close()
        # Every ok is counted in the store (a claim cut mid-flight may be counted without an
        # ok: its call got the fallback, the cap stays safe); none is counted twice.
        for number, count in granted.items():
            assert stored[number] >= count
        in_flight = 20  # at most one claim per caller can be cut after its commit
        assert sum(stored.values()) <= sum(granted.values()) + in_flight
        # No audit row lost. (Rows may be written twice when the connection dies between a
        # batch's commit and its acknowledgement: the audit writer retries the batch. Known
        # gap, see the PostgreSQL section of the README.)
        assert audited >= statuses["ok"]


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_restart_without_postgres_keeps_every_opt_out_and_serves_fallbacks(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pools.toml", POOL)
    copy = tmp_path / "data" / "optouts.json"
    async for url in fresh_schema():
        forwarder, env = behind_forwarder(url, config, tmp_path / "data")
        await forwarder.up()
        try:
            async with running_agent(env) as (agi, _http):
                await asyncio.to_thread(
                    cli, env, "optout", "add", "0142123457", "--purpose", "reminder"
                )
                for _ in range(100):  # the running agent reads it within seconds, and copies it
                    if copy.exists() and '"reminder"' in copy.read_text():
                        break
                    await asyncio.sleep(0.1)
                assert '"reminder"' in copy.read_text()
                assert "0142123457" not in copy.read_text()  # hashes, never the number
                assert "+33142123457" not in copy.read_text()
                assert copy.stat().st_mode & 0o777 == 0o600
            await forwarder.down()  # the database is gone when the agent starts again
            async with running_agent(env) as (agi, _http):
                patient = await run_session("127.0.0.1", agi, args=["reminder", "0142123456"])
                assert patient.variables["CALLERID(num)"] == "+33142000099"  # the fallback
                assert patient.variables["TRUSTLINE_STATUS"] in {"exhausted", "fallback"}
                opted = await run_session("127.0.0.1", agi, args=["reminder", "0142123457"])
                assert opted.variables["TRUSTLINE_STATUS"] == "opted_out"
                assert not opted.variables.get("CALLERID(num)")
        finally:
            await forwarder.down()
