"""Progress bars: drawn on a terminal, silent in logs and pipes."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

SCRIPT = """
from agent.cli.progress import reporter, track
with reporter("rewrap") as progress:
    for done in range(1, 4):
        progress(done, 3)
for _ in track(range(5), "verify"):
    pass
print("done")
"""


def test_a_bar_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    # A terminal 80 columns wide (a fresh pty has none: a bar would have no room).
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=60,
        )
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0 and proc.stdout == b"done\n"
    text = drawn.decode()
    assert "rewrap" in text and "3/3" in text
    assert "verify" in text and "5/5" in text


def test_nothing_when_stderr_is_a_log() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout == "done\n"
    assert proc.stderr == ""
