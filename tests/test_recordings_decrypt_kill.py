"""A killed `trustline recordings decrypt` never leaves partial plaintext audio behind.

Real `trustline` subprocesses, killed with real SIGKILL and SIGTERM while they decrypt a
recording sealed in many small chunks (so the copy takes a while); the audit row of each
says ``incomplete``, at once on SIGTERM, and from the next `trustline recordings` command
after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.clock import SystemClock
from agent.recordings import RecordingsService
from agent.recordings.keyring import init_keyring
from agent.settings import Settings, load_settings
from agent.store import open_database

AUDIO = os.urandom(12 * 2**20)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "monitor").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "listen").mkdir()
    s = load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        recordings_quiet_seconds=0.001,
    )
    init_keyring(s.keyring_path, time.time())
    plain = s.recordings_dir / "1795344922.29.wav"
    plain.write_bytes(AUDIO)

    async def seal() -> None:
        db = await open_database(s.database_path)
        try:
            service = RecordingsService(s, db, SystemClock(), settle_seconds=0, chunk_size=1024)
            await service.seal_file(str(plain))
        finally:
            await db.close()

    asyncio.run(seal())
    return s


def trustline(settings: Settings, *argv: str, **kw: object) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(
        TRUSTLINE_DATA_DIR=str(settings.data_dir),
        TRUSTLINE_RECORDINGS_DIR=str(settings.recordings_dir),
    )
    return subprocess.Popen([sys.executable, "-m", "agent", *argv], env=env, **kw)  # type: ignore[call-overload, no-any-return]  # Popen keywords passed through


def decrypt(settings: Settings, out: str, **kw: object) -> subprocess.Popen[bytes]:
    return trustline(
        settings,
        "recordings",
        "decrypt",
        "1",
        "--out",
        out,
        "--operator",
        "dr.who",
        "--reason",
        "complaint 42",
        **kw,
    )


def audit_outcomes(settings: Settings) -> list[str]:
    conn = sqlite3.connect(settings.database_path)
    try:
        rows = conn.execute(
            "SELECT outcome FROM recording_audit WHERE action = 'decrypt' ORDER BY id"
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def wait_writing_into(pid: int, folder: Path) -> None:
    """Until the process holds a file open in ``folder``: it is writing the audio there."""
    fd_dir = Path(f"/proc/{pid}/fd")
    for _ in range(2000):
        for fd in os.listdir(fd_dir):
            try:
                if os.readlink(fd_dir / fd).startswith(str(folder) + os.sep):
                    return
            except OSError:
                continue
        time.sleep(0.005)
    raise AssertionError("the decryption never started writing")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_decrypt_leaves_no_audio_and_an_incomplete_audit_row(
    settings: Settings, tmp_path: Path, sig: signal.Signals
) -> None:
    listen = tmp_path / "listen"
    proc = decrypt(settings, str(listen / "call.wav"))
    wait_writing_into(proc.pid, listen)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    assert list(listen.iterdir()) == []
    if sig == signal.SIGTERM:
        assert code == 65  # stopped after the current chunk: a recording error, said so
        assert audit_outcomes(settings) == ["incomplete"]
    else:
        assert code == -signal.SIGKILL
        assert audit_outcomes(settings) == ["started"]
        # The next run of any recordings command closes the row of the dead process.
        assert trustline(settings, "recordings", "list", stdout=subprocess.DEVNULL).wait(60) == 0
        assert audit_outcomes(settings) == ["incomplete"]
    # And a decryption that is left alone still works, into the same folder.
    assert decrypt(settings, str(listen / "call.wav"), stdout=subprocess.DEVNULL).wait(60) == 0
    assert (listen / "call.wav").read_bytes() == AUDIO
    assert audit_outcomes(settings)[-1] == "ok"


def test_streaming_to_a_player_stores_nothing_and_a_kill_is_audited(
    settings: Settings, tmp_path: Path
) -> None:
    proc = decrypt(settings, "-", stdout=subprocess.PIPE, cwd=tmp_path / "listen")
    assert proc.stdout is not None
    head = proc.stdout.read(256 * 1024)  # the player reads a little, the pipe fills up
    assert head == AUDIO[: len(head)] and len(head) == 256 * 1024
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert list((tmp_path / "listen").iterdir()) == []
    assert trustline(settings, "recordings", "list", stdout=subprocess.DEVNULL).wait(60) == 0
    assert audit_outcomes(settings) == ["incomplete"]
    full = decrypt(settings, "-", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = full.communicate(timeout=60)
    assert full.returncode == 0 and out == AUDIO and b"streamed" in err
    assert audit_outcomes(settings)[-1] == "ok"


def test_a_named_partial_file_from_a_killed_run_is_removed_by_the_next_command(
    settings: Settings, tmp_path: Path
) -> None:
    # Where the file system has no unnamed files, decryption writes a named .part file and
    # notes it under its process id first; after a SIGKILL the next command removes it.
    dead = subprocess.Popen(["true"])
    dead.wait()
    part = tmp_path / "listen" / ".call.wav.0badc0de.tlrec-part"
    part.write_bytes(AUDIO[:1000])
    notes = settings.data_dir / "decrypting"
    notes.mkdir()
    (notes / f"{dead.pid}.{part.name}").write_text(str(part))
    alive = tmp_path / "listen" / ".other.wav.0badc0de.tlrec-part"
    alive.write_bytes(b"in progress")
    (notes / f"{os.getpid()}.{alive.name}").write_text(str(alive))
    assert trustline(settings, "recordings", "list", stdout=subprocess.DEVNULL).wait(60) == 0
    assert not part.exists() and not (notes / f"{dead.pid}.{part.name}").exists()
    assert alive.exists()  # its process (this one) still runs
