"""sd_notify as systemd sees it: a real AF_UNIX datagram socket plays systemd's notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from agent.sdnotify import Notifier


def notify_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + address[1:] if address.startswith("@") else address)
    sock.settimeout(30)
    return sock


def receive(sock: socket.socket) -> dict[str, str]:
    return dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n"))


def test_trustline_run_tells_systemd_ready_pings_the_watchdog_and_says_stopping(
    tmp_path: Path,
) -> None:
    address = str(tmp_path / "notify")
    sock = notify_socket(address)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": address,
        "WATCHDOG_USEC": "200000",  # systemd's WatchdogSec=0.2s: a ping every 0.1 s
        "TRUSTLINE_AGI_LISTEN": "127.0.0.1:0",
        "TRUSTLINE_HTTP_LISTEN": "127.0.0.1:0",
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_RECORDINGS_DIR": str(tmp_path / "no-recordings"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = receive(sock)
        assert ready["READY"] == "1", ready
        # READY=1 means serving: the HTTP address named in STATUS answers at once.
        http = ready["STATUS"].rsplit("HTTP ", 1)[1]
        with urllib.request.urlopen(f"http://{http}/healthz", timeout=5) as resp:
            assert resp.status == 200
        pings = [receive(sock) for _ in range(3)]
        assert all(p == {"WATCHDOG": "1"} for p in pings), pings
        proc.send_signal(signal.SIGTERM)
        while (message := receive(sock)).get("WATCHDOG") == "1":
            pass
        assert message["STOPPING"] == "1"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        assert proc.stderr is not None
        proc.stderr.close()


def test_the_abstract_namespace_address_is_reached() -> None:
    address = f"@trustline-test-{os.getpid()}"
    sock = notify_socket(address)
    try:
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
        assert notifier.notify("READY=1", "STATUS=serving")
        assert receive(sock) == {"READY": "1", "STATUS": "serving"}
        notifier.close()
    finally:
        sock.close()


def test_a_watchdog_meant_for_another_process_is_not_pinged() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_environ(env).watchdog_interval == 15.0
    mine = Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 15.0
    other = Notifier.from_environ({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None


def test_a_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.notify("READY=1") is False
    notifier.close()


def test_outside_systemd_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.notify("READY=1") is True
