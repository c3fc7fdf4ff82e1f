"""The trustline command end to end, as an admin runs it beside a running agent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import POOLS, agi_port, write_config
from tests.fake_asterisk import run_session


async def trustline(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_report_spam_and_reinstate_reach_the_running_agent(
    make_agent, tmp_path: Path
) -> None:
    agent = await make_agent()
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    first = await trustline("report-spam", "01 42 00 00 02", *where)
    assert first.returncode == 0, first.stderr
    assert "1 report(s) today, still in its pool" in first.stdout
    second = await trustline("report-spam", "+33142000002", "--source", "agent", *where)
    assert "2 report(s) today, quarantined" in second.stdout

    table = await trustline("numbers", *where)
    line = next(ln for ln in table.stdout.splitlines() if "+33142000002" in ln)
    assert "quarantined" in line and "0/60" in line

    # The running agent learns of it from the store: the number is no longer handed out.
    for _ in range(200):
        if agent.outbound.usable_by_pool()["reminders"] == 2:
            break
        await asyncio.sleep(0.05)
    handed = set()
    for _ in range(6):
        session = await run_session("127.0.0.1", agi_port(agent), args=["reminder", "0142123456"])
        handed.add(session.variables["CALLERID(num)"])
    assert "+33142000002" not in handed

    back = await trustline("reinstate", "+33142000002", *where)
    assert back.returncode == 0 and "reinstated" in back.stdout
    unknown = await trustline("reinstate", "+12125550100", *where)
    assert unknown.returncode == 65 and "not in any pool" in unknown.stderr


async def test_run_starts_on_embedded_defaults_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        "TRUSTLINE_AGI_LISTEN": "127.0.0.1:0",
        "TRUSTLINE_HTTP_LISTEN": "127.0.0.1:18089",
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = None
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get("http://127.0.0.1:18089/readyz") as resp:
                        ready = await resp.json()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        assert ready is not None and ready["status"] == "ready"
        assert (tmp_path / "data" / "trustline.sqlite3").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"trustline: stopped" in out


async def test_run_refuses_a_bad_config_with_its_location(tmp_path: Path) -> None:
    bad = write_config(
        tmp_path / "pools.toml", POOLS.replace("daily_cap = 80", "daily_cap = 'many'")
    )
    result = await trustline("run", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 78
    assert "defaults.daily_cap" in result.stderr


async def test_an_os_error_is_one_clear_line_and_exit_74(tmp_path: Path) -> None:
    (tmp_path / "notadir").write_text("a file where a folder should be")
    result = await trustline(
        "keys",
        "init",
        env={
            "TRUSTLINE_KEYRING": str(tmp_path / "notadir" / "keyring"),
            "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        },
    )
    assert result.returncode == 74, result.stderr
    assert "Traceback" not in result.stderr
    assert "notadir" in result.stderr
