"""A narrowed /proc for recordings tests: what a process in its own PID namespace sees."""

from __future__ import annotations

from pathlib import Path


def proc_view(base: Path, *pids: int) -> Path:
    """A process table showing only ``pids`` (entries link to the real /proc/<pid>): what a
    container sees in its own PID namespace, or in Asterisk's with ``--pid=container:...``."""
    view = base / f"proc-{'-'.join(map(str, pids))}"
    view.mkdir()
    for pid in pids:
        (view / str(pid)).symlink_to(f"/proc/{pid}")
    return view
