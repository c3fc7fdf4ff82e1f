"""Releases as a sysadmin gets them: the wheel and sdist built from a clean checkout, the
wheel installed into a fresh venv, and the agent started from it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are tracked")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def clean_checkout(into: Path) -> Path:
    """The tracked files only, as a fresh clone has them (no venv, no build leftovers)."""
    for name in tracked_files():
        if (ROOT / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, into / name)
    return into


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(240)
def test_the_wheel_from_a_clean_checkout_installs_and_runs(tmp_path: Path) -> None:
    src = clean_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    [sdist] = dist.glob("trustline-*.tar.gz")
    [wheel] = dist.glob("trustline-*.whl")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"dialplan/trustline.conf", "asterisk-conf/manager.conf", "CHANGELOG.md"} <= names
    assert "docker/compose.yaml" in names and "docker/systemd/trustline.service" in names
    with zipfile.ZipFile(wheel) as whl:
        inside = set(whl.namelist())
        scripts = next(whl.read(n) for n in inside if n.endswith("entry_points.txt")).decode()
    assert "agent/share/dialplan/trustline.conf" in inside
    assert "agent/share/asterisk-conf/manager.conf" in inside
    assert "agent/examples/pools.toml" in inside
    assert "trustline = agent.cli:main" in scripts and "trustline-agi =" in scripts

    # A fresh venv that sees nothing of this checkout: dependencies come from the index.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    subprocess.run([*pip, "-q", "--no-compile", str(wheel)], check=True, capture_output=True)
    bin_ = venv / "bin"
    assert (bin_ / "trustline-agi").exists()

    printed = subprocess.run(
        [bin_ / "trustline", "print-dialplan"], cwd=tmp_path, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    for conf in (ROOT / "dialplan").glob("*.conf"):
        assert conf.read_text() in printed.stdout
    manager = subprocess.run(
        [bin_ / "trustline", "print-manager-conf"], cwd=tmp_path, capture_output=True, text=True
    )
    assert manager.stdout == (ROOT / "asterisk-conf" / "manager.conf").read_text()

    http = f"127.0.0.1:{free_port()}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "TRUSTLINE_AGI_LISTEN": "127.0.0.1:0",
        "TRUSTLINE_HTTP_LISTEN": http,
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_RECORDINGS_DIR": str(tmp_path / "no-recordings"),
    }
    agent = subprocess.Popen(
        [bin_ / "trustline", "run"], cwd=tmp_path, env=env, stderr=subprocess.PIPE
    )
    try:
        # The image's own health check, run by the installed interpreter.
        healthy = False
        for _ in range(150):
            check = subprocess.run(
                [bin_ / "python", ROOT / "docker" / "healthcheck.py"],
                env=env,
                capture_output=True,
            )
            if check.returncode == 0:
                healthy = True
                break
            assert agent.poll() is None, agent.communicate()[1].decode()
            time.sleep(0.2)
        assert healthy, check.stderr.decode()
    finally:
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()
    assert b"trustline: stopped" in err


def test_the_health_check_fails_when_nothing_answers() -> None:
    env = {**os.environ, "TRUSTLINE_HTTP_LISTEN": f"0.0.0.0:{free_port()}"}
    check = subprocess.run(
        [sys.executable, ROOT / "docker" / "healthcheck.py"], env=env, capture_output=True
    )
    assert check.returncode == 1
    assert b"http://127.0.0.1:" in check.stderr


def trustline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *map(str, args)], capture_output=True, text=True
    )


def test_print_dialplan_writes_each_file_and_keeps_an_admins_edits(tmp_path: Path) -> None:
    out = tmp_path / "asterisk"
    first = trustline("print-dialplan", "--out", out)
    assert first.returncode == 0, first.stderr
    for conf in (ROOT / "dialplan").glob("*.conf"):
        assert (out / conf.name).read_text() == conf.read_text()
    (out / "trustline.conf").write_text("; the admin's edits\n")
    again = trustline("print-dialplan", "--out", out)
    assert again.returncode == 64
    assert "trustline.conf" in again.stderr and "--force" in again.stderr
    assert (out / "trustline.conf").read_text() == "; the admin's edits\n"
    forced = trustline("print-dialplan", "--out", out, "--force")
    assert forced.returncode == 0
    assert (out / "trustline.conf").read_text() == (ROOT / "dialplan/trustline.conf").read_text()
