"""The trustline command end to end, as an admin runs it beside a running agent."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import aiohttp
import pytest

from agent.cli import main
from agent.settings import SYSTEM_DATA_DIR
from tests.conftest import POOLS, AgentFactory, agi_port, write_config
from tests.fake_asterisk import run_session


async def trustline(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_report_spam_and_reinstate_reach_the_running_agent(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await make_agent()
    assert agent.outbound is not None
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    first = await trustline("report-spam", "01 42 00 00 02", *where)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "+33142000002: 1 report(s) today, active\n"
    second = await trustline("report-spam", "+33142000002", "--source", "agent", *where)
    assert second.stdout == "+33142000002: 2 report(s) today, quarantined\n"
    # A third report finds the number quarantined and says so (not "still in its pool").
    third = await trustline("report-spam", "+33142000002", *where)
    assert third.stdout == "+33142000002: 3 report(s) today, quarantined\n"

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
    assert back.returncode == 0 and back.stdout == "+33142000002: reinstated\n"
    # Nothing to do is not a failure: exit 0, and the message says so.
    again = await trustline("reinstate", "+33142000002", *where)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "+33142000002: nothing to do, it was neither quarantined nor resting\n"
    unknown = await trustline("reinstate", "+12125550100", *where)
    assert unknown.returncode == 65 and "not in any pool" in unknown.stderr


async def test_report_spam_rejects_what_is_not_a_number_and_stores_nothing(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    await make_agent()
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    for text in ("abc", "", "   "):
        result = await trustline("report-spam", text, *where)
        assert result.returncode == 65, (text, result)
        assert "is not a phone number" in result.stderr and result.stdout == ""
        bad = await trustline("reinstate", text, *where)
        assert bad.returncode == 65 and "is not a phone number" in bad.stderr
    with sqlite3.connect(tmp_path / "data" / "trustline.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM spam_reports").fetchone() == (0,)


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """A user's environment with no TRUSTLINE_* setting: the documented defaults apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    return env


async def test_run_starts_on_embedded_defaults_and_stops_on_sigterm(tmp_path: Path) -> None:
    if SYSTEM_DATA_DIR.exists():
        pytest.skip(f"{SYSTEM_DATA_DIR} exists on this machine: it is the default data folder")
    env = fresh_env(tmp_path)
    env.update(TRUSTLINE_AGI_LISTEN="127.0.0.1:0", TRUSTLINE_HTTP_LISTEN="127.0.0.1:18089")
    started_in = tmp_path / "somewhere"
    started_in.mkdir()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        env=env,
        cwd=started_in,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    data = tmp_path / "state" / "trustline"
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
        # The store is in the user's state folder, not in the folder the agent started from;
        # only the agent may read it.
        assert list(started_in.iterdir()) == []
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("trustline.sqlite3", "callee-hash.key"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        # An admin command run from any other folder answers about the same store.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        listed = await trustline("numbers", "--json", env=env, cwd=elsewhere)
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {r["number"] for r in rows} >= {"+33142000001", "+33142000099"}
        assert rows[0].keys() == {"pool", "number", "name", "used", "cap", "state"}
        assert list(elsewhere.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert b"trustline: stopped" in out


async def test_an_admin_command_never_creates_a_store_and_says_where_it_looked(
    tmp_path: Path,
) -> None:
    if SYSTEM_DATA_DIR.exists():
        pytest.skip(f"{SYSTEM_DATA_DIR} exists on this machine: it is the default data folder")
    env = fresh_env(tmp_path)
    expected = tmp_path / "state" / "trustline" / "trustline.sqlite3"
    for command in (
        ["numbers"],
        ["block", "list"],
        ["reinstate", "+33142000001"],
        ["report-spam", "+33142000001"],
        ["stats"],
        ["screen", "--caller", "0612345678", "--dialled", "0142000001"],
    ):
        result = await trustline(*command, env=env, cwd=tmp_path)
        assert result.returncode == 74, (command, result)
        assert f"no store at {expected}" in result.stderr, result.stderr
        assert "--data-dir DIR or TRUSTLINE_DATA_DIR" in result.stderr
    given = await trustline("block", "list", "--data-dir", "here", env=env, cwd=tmp_path)
    assert given.returncode == 74 and f"no store at {tmp_path / 'here'}/" in given.stderr
    assert not any((tmp_path / "state").rglob("*")) and not (tmp_path / "here").exists()


async def test_admin_commands_that_do_not_need_the_pools_work_while_the_file_is_bad(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    await make_agent()
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]
    assert (await trustline("block", "add", "+4470*", *where)).returncode == 0
    assert (await trustline("report-spam", "+33142000002", *where)).returncode == 0
    assert (await trustline("report-spam", "+33142000002", *where)).returncode == 0
    # The agent keeps running on its last good config; the file on disk is now broken.
    write_config(tmp_path / "pools.toml", POOLS.replace("daily_cap = 80", "daily_cap = 'many'"))

    listed = await trustline("block", "list", *where)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("+4470*\t") and "is invalid" in listed.stderr
    as_json = await trustline("allow", "list", "--json", *where)
    assert as_json.returncode == 0 and as_json.stdout == ""
    back = await trustline("reinstate", "+33142000002", *where)
    assert back.returncode == 0, back.stderr
    assert (
        back.stdout == "+33142000002: reinstated\n" and "reinstating from the store" in back.stderr
    )
    national = await trustline("reinstate", "01 42 00 00 02", *where)
    assert national.returncode == 65 and "write it as +E164" in national.stderr

    needs = await trustline("numbers", *where)
    assert needs.returncode == 78
    assert "defaults.daily_cap" in needs.stderr
    assert "`trustline numbers` needs the pools file" in needs.stderr
    assert "block list, allow list, reinstate +E164, keys and recordings still work" in needs.stderr


def test_usage_errors_exit_64_and_version_comes_from_the_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for argv in ([], ["stats", "--days", "abc"], ["block"], ["numbers", "--nope"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 64, argv
        assert "usage: trustline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trustline {version('trustline')}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    helptext = capsys.readouterr().out
    assert "Exit codes: 0 done (or nothing to do, said on stdout), 64 bad usage" in helptext


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
