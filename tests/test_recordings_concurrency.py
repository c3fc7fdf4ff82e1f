"""Two processes on one recordings folder: the agent's retention and the CLI's rewrap.

Each step that creates, replaces or deletes a sealed file holds the folder's flock, and
re-reads its row under it: a re-wrap never brings back a file retention deleted, and
retention deletes the file the row describes once the re-wrap is done.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from agent.clock import FrozenClock
from agent.recordings import RecordingsService
from agent.recordings.keyring import init_keyring, rotate_keyring
from agent.settings import Settings, load_settings
from agent.store import open_database

ROOT = Path(__file__).resolve().parents[1]
UID = "1795000000.7"


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size // 2**20):
            f.write(os.urandom(2**20))


def start_cli_rewrap(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TRUSTLINE_RECORDINGS_DIR=str(settings.recordings_dir),
        TRUSTLINE_KEYRING=str(settings.keyring_path),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
            "recordings",
            "rewrap",
            "--data-dir",
            str(settings.data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def test_retention_in_the_agent_and_rewrap_in_the_cli_never_resurrect_a_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "monitor").mkdir()
    settings = load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        keyring=str(tmp_path / "data" / "keyring"),
        retention_days=30,
        recordings_quiet_seconds=0.001,
    )
    init_keyring(settings.keyring_path, time.time())
    plain = settings.recordings_dir / f"{UID}.wav"
    await asyncio.to_thread(write_random, plain, 96 * 2**20)  # a long call: rewrap takes a while
    db = await open_database(settings.database_path)
    try:
        agent = RecordingsService(
            settings, db, FrozenClock(time.time() + 31 * 86400), settle_seconds=0
        )
        await agent.sweep()
        [row] = await agent.listing()
        rotate_keyring(settings.keyring_path, time.time())

        cli = start_cli_rewrap(settings)
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tlrec-rewrap") for p in settings.recordings_dir.iterdir()):
            assert cli.poll() is None and time.monotonic() < deadline, "rewrap never started"
            await asyncio.sleep(0.001)
        # The CLI is copying the file under a new header; the agent's retention pass runs now.
        purged = await agent.purge_expired()
        out, err = await asyncio.to_thread(cli.communicate, timeout=120)
        assert cli.returncode == 0, err
        assert [r.id for r in purged] == [row.id]
        assert not await asyncio.to_thread(os.path.exists, row.path), (
            "re-wrap brought a purged recording back"
        )
        assert [
            p.name for p in settings.recordings_dir.iterdir() if not p.name.startswith(".")
        ] == []
        report = await agent.sweep(at_startup=False)
        assert report.adopted == 0 and await agent.listing() == []
        [audit] = await agent.audit(row.id)
        assert (audit.action, audit.outcome) == ("purge", "ok")
        assert "already gone" not in audit.reason
        # Retention deleted the file its row described after the re-wrap: the new key's.
        assert b"re-wrapped 1 of 1" in out
        assert audit.detail["key_id"] != row.key_id
    finally:
        await db.close()
