"""Two real agent processes on one PostgreSQL database: caps stay exact across hosts.

Each agent is a ``trustline run`` subprocess with its own FastAGI and HTTP ports and its own
data folder, both on one fresh schema. 2 × 500 concurrent FastAGI sessions (each one minimal:
headers, the agent's SET VARIABLEs, close) compete for a pool of k numbers with cap c.

Each agent alone has more calls than the pool has units (500 > k × c): then every unit must be
handed out, whichever agent is faster. An agent answers ``exhausted`` only once it holds no
unit and none is on its way to it, so no unit can stay behind in a lease. (With fewer calls
than that, the agent that happens to be served in full may end holding a few leased units the
other one wanted: at most 1/LEASE_SHARE of what was left of a cap, as designed; they go back
to the store when its lease goes idle.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg

from tests.conftest import write_config
from tests.fake_asterisk import run_session
from tests.postgres_schema import fresh_schema

K, CAP, PER_AGENT = 5, 80, 500  # 80: the field's daily cap
NUMBERS = [f"+3314200000{i}" for i in range(1, K + 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@asynccontextmanager
async def running_agent(env: dict[str, str]) -> AsyncIterator[tuple[int, int]]:
    """A ``trustline run`` subprocess; yields (FastAGI port, HTTP port) once it has started.

    Its log goes to a file, not a pipe: a pipe nobody reads fills up and stalls the agent."""
    agi, http = free_port(), free_port()
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent",
            "run",
            env={
                **os.environ,
                **env,
                "TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{agi}",
                "TRUSTLINE_HTTP_LISTEN": f"127.0.0.1:{http}",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            async with aiohttp.ClientSession() as client:
                for _ in range(300):
                    try:
                        async with client.get(f"http://127.0.0.1:{http}/healthz") as resp:
                            if resp.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the agent did not start")
            yield agi, http
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            log.seek(0)
            assert proc.returncode == 0, log.read()[-3000:].decode(errors="replace")


def pool_toml(numbers: list[str], cap: int) -> str:
    return f"""
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = {cap}

[pools.reminders]
purposes = ["reminder"]
fallback = "+33142000099"
min_active = 1
numbers = [{", ".join(f'{{ number = "{n}", name = "Clinique" }}' for n in numbers)}]

[screening]
own_numbers = ["+33142000099"]  # the switchboard: a fallback outside the pool is declared
"""


async def two_agents(
    tmp_path: Path, pool: str, per_agent: int
) -> tuple[Counter[str | None], Counter[str], dict[str, int], int]:
    """``per_agent`` concurrent calls on each of two agents, then both stopped (their leases
    back in the store): (statuses, numbers handed out, the store's counts, ok audit rows)."""
    config = write_config(tmp_path / "pools.toml", pool)
    async for url in fresh_schema():
        common = {
            "TRUSTLINE_CONFIG": str(config),
            "TRUSTLINE_DATABASE_URL": url,
            "TRUSTLINE_CALLEE_KEY_FILE": str(tmp_path / "callee.key"),
            # The machine running the tests is shared and small: a generous deadline keeps
            # late claims (counted, answered with the fallback) out of this exact count.
            "TRUSTLINE_DEADLINE_MS": "10000",  # the longest the setting allows
            # Every session is decided: none is shed as overload (the default bound is 256).
            "TRUSTLINE_AGI_MAX_IN_FLIGHT": "1000",
            "TRUSTLINE_LOG_LEVEL": "WARNING",
        }
        async with (
            running_agent({**common, "TRUSTLINE_DATA_DIR": str(tmp_path / "a")}) as (agi_a, _),
            running_agent({**common, "TRUSTLINE_DATA_DIR": str(tmp_path / "b")}) as (agi_b, _),
        ):
            sessions = await asyncio.gather(
                *(
                    run_session("127.0.0.1", port, args=["reminder", "0142123456"], timeout=50)
                    for port in (agi_a, agi_b)
                    for _ in range(per_agent)
                )
            )
        statuses = Counter(s.variables.get("TRUSTLINE_STATUS") for s in sessions)
        granted = Counter(
            s.variables["CALLERID(num)"]
            for s in sessions
            if s.variables.get("TRUSTLINE_STATUS") == "ok"
        )
        conn = await asyncpg.connect(url)
        try:
            stored = dict(await conn.fetch("SELECT number, used FROM daily_usage"))
            audited = await conn.fetchval("SELECT COUNT(*) FROM call_audit WHERE status = 'ok'")
        finally:
            await conn.close()
        return statuses, granted, stored, audited
    raise AssertionError("no schema")


POOL = pool_toml(NUMBERS, CAP)


async def test_two_agents_grant_exactly_the_caps_of_one_pool(tmp_path: Path) -> None:
    statuses, granted, stored, audited = await two_agents(tmp_path, POOL, PER_AGENT)
    assert PER_AGENT > K * CAP  # each agent alone asks for more than the pool has
    assert statuses["ok"] == K * CAP
    assert statuses["exhausted"] == 2 * PER_AGENT - K * CAP  # the fallback, not silence
    assert max(granted.values()) <= CAP
    # Every ok is one count in the store and one audit row, never more.
    assert stored == dict(granted) == dict.fromkeys(NUMBERS, CAP)
    assert audited == statuses["ok"]


async def test_two_agents_on_a_large_pool_count_exactly_the_calls_with_units_leased_ahead(
    tmp_path: Path,
) -> None:
    """200 numbers: each agent's calls reach numbers not in use fast enough to get units
    leased ahead (agent/outbound/ahead.py) on the numbers both agents rank next. Once both
    stop, the store counts exactly the calls handed each number: no unit leased ahead is left
    counted, none is counted twice."""
    numbers = [f"+331420{i:05d}" for i in range(200)]
    statuses, granted, stored, audited = await two_agents(tmp_path, pool_toml(numbers, 40), 500)
    assert statuses == Counter({"ok": 1000})
    assert max(granted.values()) <= 40
    assert {n: used for n, used in stored.items() if used} == dict(granted)
    assert audited == 1000
