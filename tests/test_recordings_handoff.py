"""The MixMonitor post-command hands its file to the running agent over a real Unix socket,
and seals the file itself when no agent answers."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.recordings import RecordingsService, handoff
from agent.recordings import format as fmt
from agent.recordings.keyring import init_keyring
from agent.settings import Settings, load_settings
from agent.store import open_database
from tests.captures import MIXMONITOR_WAV

UID = "1795344922.29"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "monitor").mkdir()
    (tmp_path / "data").mkdir(mode=0o700)
    s = load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        recordings_quiet_seconds=0.001,
    )
    init_keyring(s.keyring_path, time.time())
    return s


@pytest.fixture
async def agent(settings: Settings) -> AsyncIterator[RecordingsService]:
    db = await open_database(settings.database_path)
    service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
    server = service.handoff_server()
    assert await server.start()
    try:
        yield service
    finally:
        await server.close()
        await db.close()


async def post_command(
    settings: Settings, *argv: str, keyring: str | None = None, light: bool = False
) -> tuple[int, str, str]:
    """`trustline recordings seal ...` (or the light entry) as MixMonitor runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(
        TRUSTLINE_DATA_DIR=str(settings.data_dir),
        TRUSTLINE_RECORDINGS_DIR=str(settings.recordings_dir),
        TRUSTLINE_RECORDINGS_QUIET_SECONDS="0.001",
    )
    if keyring is not None:
        env["TRUSTLINE_KEYRING"] = keyring
    module = "agent.recordings.handoff" if light else "agent"
    cmd = [] if light else ["recordings", "seal"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *cmd,
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_post_command_hands_the_file_to_the_running_agent(
    settings: Settings, agent: RecordingsService
) -> None:
    sock = settings.data_dir / handoff.SOCKET_NAME
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    plain = settings.recordings_dir / f"{UID}.wav"
    plain.write_bytes(MIXMONITOR_WAV.read_bytes())
    # The command is given no usable keyring: only the agent can have sealed the file.
    code, out, err = await post_command(
        settings, str(plain), "--uniqueid", UID, keyring="/nonexistent/keyring"
    )
    assert (code, out.strip()) == (0, "sealed as recording 1 (by the running agent)"), err
    assert not plain.exists() and (settings.recordings_dir / f"{UID}.wav{fmt.SUFFIX}").exists()
    [row] = await agent.listing()
    assert row.uniqueid == UID and row.plain_size == len(MIXMONITOR_WAV.read_bytes())
    # The light entry point does the same; a file outside the folder is refused (64).
    second = settings.recordings_dir / "1795344923.30.wav"
    second.write_bytes(b"RIFF" + bytes(5000))
    code, out, _ = await post_command(settings, second.name, light=True)
    assert (code, out.strip()) == (0, "sealed as recording 2 (by the running agent)")
    code, _, err = await post_command(settings, "/etc/hostname", keyring="/nonexistent/k")
    assert code == 64 and "not inside the recordings folder" in err


async def test_with_no_agent_the_post_command_seals_by_itself(settings: Settings) -> None:
    # A stale socket from an agent that died: nobody listens on it.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(settings.data_dir / handoff.SOCKET_NAME))
    stale.close()
    plain = settings.recordings_dir / f"{UID}.wav"
    plain.write_bytes(MIXMONITOR_WAV.read_bytes())
    code, out, err = await post_command(settings, f"{UID}.wav", "--uniqueid", UID)
    assert (code, out.strip()) == (0, "sealed as recording 1"), err
    assert not plain.exists()
    other = settings.recordings_dir / "1795344923.30.wav"
    other.write_bytes(b"RIFF" + bytes(5000))
    code, out, err = await post_command(settings, other.name, light=True)
    assert (code, out.strip()) == (0, "sealed as recording 2"), err
    # And an agent starting later takes the stale socket over.
    db = await open_database(settings.database_path)
    server = RecordingsService(settings, db, SystemClock()).handoff_server()
    try:
        assert await server.start()
        assert handoff._answers(settings.data_dir / handoff.SOCKET_NAME)
    finally:
        await server.close()
        await db.close()
    assert not (settings.data_dir / handoff.SOCKET_NAME).exists()


async def test_a_second_agent_leaves_the_first_ones_socket_alone(
    settings: Settings, agent: RecordingsService
) -> None:
    db = await open_database(settings.database_path)
    try:
        second = RecordingsService(settings, db, SystemClock()).handoff_server()
        assert not await second.start()
        await second.close()
        assert handoff._answers(settings.data_dir / handoff.SOCKET_NAME)
    finally:
        await db.close()


async def test_garbage_on_the_socket_gets_an_answer_or_a_close_and_serving_goes_on(
    settings: Settings, agent: RecordingsService
) -> None:
    path = str(settings.data_dir / handoff.SOCKET_NAME)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"not json\n")
    assert b"malformed hand-off request" in await reader.readline()
    writer.close()
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"x" * 200_000)  # no end of line, past the limit
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    plain = settings.recordings_dir / f"{UID}.wav"
    plain.write_bytes(MIXMONITOR_WAV.read_bytes())
    answer = await asyncio.to_thread(
        handoff.request_seal, settings.data_dir / handoff.SOCKET_NAME, plain.name, UID
    )
    assert answer == {"ok": True, "id": 1}


async def test_a_data_folder_too_long_for_a_socket_only_disables_the_hand_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    s = load_settings(data_dir=str(deep), recordings_dir=str(tmp_path))
    db = await open_database(s.database_path)
    try:
        server = RecordingsService(s, db, SystemClock()).handoff_server()
        assert not await server.start()
        await server.close()
    finally:
        await db.close()
    assert "post-commands will seal by themselves" in caplog.text
    with pytest.raises(handoff.AgentDown):
        handoff.request_seal(deep / handoff.SOCKET_NAME, "x.wav", None)


async def test_with_an_agent_running_the_post_command_loads_nothing_heavy(
    settings: Settings, agent: RecordingsService
) -> None:
    """`trustline recordings seal` runs after every recorded call: with the agent up, the
    command hands the file over before pydantic, the store or cryptography are imported."""
    plain = settings.recordings_dir / f"{UID}.wav"
    plain.write_bytes(MIXMONITOR_WAV.read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "agent",
        "recordings",
        "seal",
        f"--data-dir={settings.data_dir}",
        plain.name,
        "--uniqueid",
        UID,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert (proc.returncode, out.decode().strip()) == (
        0,
        "sealed as recording 1 (by the running agent)",
    )
    imported = {line.split("|")[-1].strip() for line in err.decode().splitlines()}
    heavy = {"pydantic", "pydantic_settings", "cryptography", "aiosqlite", "agent.settings"}
    assert not imported & heavy, imported & heavy
    # Not even the parser: its start-up is part of every recorded call's post-command.
    assert "argparse" not in imported
    assert "asyncio" not in imported and not plain.exists()


@pytest.mark.parametrize(
    "env",
    [
        {"TRUSTLINE_DATA_DIR": "/srv/tl"},
        {"trustline_data_dir": "relative/data"},
        {"TRUSTLINE_DATA_DIR": "~/tl"},
        {"XDG_STATE_HOME": "/state"},
        {"XDG_STATE_HOME": "not-absolute"},
        {},
    ],
)
def test_the_post_command_finds_the_data_folder_where_trustline_does(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper() in ("TRUSTLINE_DATA_DIR", "XDG_STATE_HOME"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert handoff.data_dir() == load_settings().data_dir
    assert handoff.data_dir("x/y") == load_settings(data_dir="x/y").data_dir
