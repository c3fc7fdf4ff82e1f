"""`trustline keys ...` and `trustline recordings ...` end to end through agent.cli.main."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import stat
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from agent.cli import main
from tests.captures import MIXMONITOR_WAV

CAPTURE = MIXMONITOR_WAV
UID = "1795344922.29"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("TRUSTLINE_"):
            monkeypatch.delenv(name)
    (tmp_path / "monitor").mkdir()
    monkeypatch.setenv("TRUSTLINE_RECORDINGS_DIR", str(tmp_path / "monitor"))
    monkeypatch.setenv("TRUSTLINE_RETENTION_DAYS", "30")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keyring_and_recordings_end_to_end(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(env / "data")
    code, _, err = run(capsys, "keys", "list", "--data-dir", data)
    assert code == 78 and "trustline keys init" in err

    code, out, _ = run(capsys, "keys", "--data-dir", data, "init")
    assert code == 0 and "active key" in out
    keyring = env / "data" / "keyring"
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    assert run(capsys, "keys", "init", "--data-dir", data)[0] == 78

    (env / "monitor" / f"{UID}.wav").write_bytes(CAPTURE.read_bytes())
    code, out, _ = run(
        capsys, "recordings", "seal", f"{UID}.wav", "--uniqueid", UID, "--data-dir", data
    )
    assert code == 0 and "sealed as recording 1" in out
    assert not (env / "monitor" / f"{UID}.wav").exists()

    code, out, _ = run(capsys, "recordings", "list", "--data-dir", data)
    assert code == 0
    [line] = [ln for ln in out.splitlines() if UID in ln]
    rec_id = line.split()[0]
    assert rec_id == "1" and "sealed" in line and str(len(CAPTURE.read_bytes())) in line

    code, out, _ = run(capsys, "recordings", "verify", "--data-dir", data)
    assert code == 0 and "1 recordings verified" in out

    listen = env / "listen.wav"
    with pytest.raises(SystemExit) as usage:  # argparse: --operator and --reason are required
        main(["recordings", "decrypt", rec_id, "--out", str(listen), "--data-dir", data])
    assert usage.value.code == 64
    assert "--operator" in capsys.readouterr().err
    code, _, err = run(
        capsys,
        "recordings",
        "decrypt",
        rec_id,
        "--out",
        str(listen),
        "--operator",
        "dr.who",
        "--reason",
        "  ",
        "--data-dir",
        data,
    )
    assert code == 64 and "reason" in err and not listen.exists()
    code, out, _ = run(
        capsys,
        "recordings",
        "decrypt",
        rec_id,
        "--out",
        str(listen),
        "--operator",
        "dr.who",
        "--reason",
        "patient complaint 42",
        "--data-dir",
        data,
    )
    assert code == 0 and "audited" in out
    assert listen.read_bytes() == CAPTURE.read_bytes()
    assert stat.S_IMODE(listen.stat().st_mode) == 0o600

    conn = sqlite3.connect(env / "data" / "trustline.sqlite3")
    rows = conn.execute(
        "SELECT action, recording_id, operator, reason, outcome FROM recording_audit"
    ).fetchall()
    conn.close()
    assert rows[-1] == ("decrypt", 1, "dr.who", "patient complaint 42", "ok")

    code, out, _ = run(capsys, "keys", "rotate", "--data-dir", data)
    assert code == 0 and "1 recordings are wrapped by older keys" in out
    code, out, err = run(capsys, "recordings", "rewrap", "--data-dir", data)
    # Not a terminal (a log, a pipe): no progress bar in the way.
    assert code == 0 and "re-wrapped 1 of 1" in out and err == ""
    code, out, _ = run(capsys, "keys", "list", "--data-dir", data)
    active = [ln for ln in out.splitlines() if " yes " in ln]
    assert len(active) == 1 and active[0].split()[-1] == "1"
    assert len(re.findall(r"^k\d{8}-", out, re.M)) == 2
    key_text = keyring.read_text()
    for printed in (out, err):
        assert not any(tok in printed for tok in re.findall(r'"key": "([^"]+)"', key_text))

    code, out, _ = run(capsys, "recordings", "purge", "--dry-run", "--data-dir", data)
    assert code == 0 and "would delete 0 recordings older than 30 days" in out


def test_damaged_recording_and_unsafe_keyring_exit_codes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(env / "data")
    assert run(capsys, "keys", "init", "--data-dir", data)[0] == 0
    (env / "monitor" / f"{UID}.wav").write_bytes(CAPTURE.read_bytes())
    assert run(capsys, "recordings", "seal", f"{UID}.wav", "--data-dir", data)[0] == 0
    sealed = env / "monitor" / f"{UID}.wav.tlrec"
    blob = sealed.read_bytes()
    sealed.write_bytes(blob[:-100])

    code, out, err = run(capsys, "recordings", "verify", "--data-dir", data)
    assert code == 65
    assert "FAIL" in out and "truncated" in out and "1 of 1 recordings failed" in err
    code, _, err = run(
        capsys,
        "recordings",
        "decrypt",
        "1",
        "--out",
        str(env / "o.wav"),
        "--operator",
        "a",
        "--reason",
        "b",
        "--data-dir",
        data,
    )
    assert code == 65 and "truncated" in err and not (env / "o.wav").exists()

    (env / "data" / "keyring").chmod(0o644)
    code, _, err = run(capsys, "recordings", "verify", "--data-dir", data)
    assert code == 78 and "mode 0644" in err and "chmod 600" in err


def test_purge_deletes_and_audits(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(env / "data")
    assert run(capsys, "keys", "init", "--data-dir", data)[0] == 0
    old = env / "monitor" / "1700000000.1.wav"
    old.write_bytes(CAPTURE.read_bytes())
    long_ago = 1_700_000_000
    os.utime(old, (long_ago, long_ago))
    assert run(capsys, "recordings", "seal", str(old), "--data-dir", data)[0] == 0
    code, out, _ = run(capsys, "recordings", "purge", "--operator", "ops-bob", "--data-dir", data)
    assert code == 0 and "deleted 1 recordings" in out and "1700000000.1" in out
    assert [p.name for p in (env / "monitor").iterdir()] == [".trustline-recordings.lock"]
    code, out, _ = run(capsys, "recordings", "list", "--all", "--data-dir", data)
    assert "purged" in out
    conn = sqlite3.connect(env / "data" / "trustline.sqlite3")
    [(action, operator, detail)] = conn.execute(
        "SELECT action, operator, detail FROM recording_audit"
    ).fetchall()
    conn.close()
    assert (action, operator) == ("purge", "ops-bob") and "1700000000.1.wav.tlrec" in detail


def test_listings_in_json_and_progress_bars_on_a_terminal(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(env / "data")
    assert run(capsys, "keys", "init", "--data-dir", data)[0] == 0
    for n in range(3):
        (env / "monitor" / f"179534492{n}.{n}.wav").write_bytes(CAPTURE.read_bytes())
        assert (
            run(capsys, "recordings", "seal", f"179534492{n}.{n}.wav", "--data-dir", data)[0] == 0
        )
    code, out, _ = run(capsys, "recordings", "list", "--json", "--data-dir", data)
    rows = [json.loads(line) for line in out.splitlines()]  # JSON lines, like every listing
    assert code == 0 and [r["id"] for r in rows] == [3, 2, 1]
    assert rows[0]["uniqueid"] == "1795344922.2" and rows[0]["state"] == "sealed"
    assert rows[0]["plain_size"] == len(CAPTURE.read_bytes())
    assert rows[0]["recorded_at"].endswith("Z") and rows[0]["purged_at"] is None
    code, out, _ = run(capsys, "keys", "list", "--json", "--data-dir", data)
    [key] = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and key["active"] is True and key["recordings"] == 3
    assert set(key) == {"key_id", "created", "active", "recordings"}  # never key material

    # On a terminal, verify draws a bar on stderr (a real pty); stdout keeps the report.
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env_vars = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env_vars.update(TRUSTLINE_RECORDINGS_DIR=str(env / "monitor"), TRUSTLINE_DATA_DIR=data)
    done = subprocess.run(
        [sys.executable, "-m", "agent", "recordings", "verify"],
        env=env_vars,
        stdout=subprocess.PIPE,
        stderr=secondary,
        timeout=120,
    )
    os.close(secondary)
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    os.close(primary)
    assert done.returncode == 0 and b"3 recordings verified" in done.stdout
    assert b"verify" in drawn and b"3/3" in drawn and b"100%" in drawn
