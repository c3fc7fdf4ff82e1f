"""PostgreSQL not there when the agent starts: it starts anyway, answers every call with the
pool's fallback, says why on /readyz, and serves from the store once the server is reachable.

The database sits behind a TCP forwarder on a port that is closed at first (the server is
"down"); opening the forwarder brings it "up", without touching the real server.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.conftest import write_config
from tests.fake_asterisk import run_session
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
                store = body["checks"]["store"]  # type: ignore[index]
                assert "cannot connect" in store["detail"]
                assert f"127.0.0.1:{port}" in store["detail"]

                sessions = await asyncio.gather(
                    *(
                        run_session("127.0.0.1", agi, args=["reminder", "0142123456"])
                        for _ in range(20)
                    )
                )
                for s in sessions:
                    assert s.variables["CALLERID(num)"] == "+33142000099"  # the pool's fallback
                    assert s.variables["TRUSTLINE_STATUS"] in {"exhausted", "fallback"}

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
