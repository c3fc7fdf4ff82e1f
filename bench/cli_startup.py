"""How long `trustline` takes to start: `--help`, `recordings seal --help`, `--version`.

MixMonitor's post-command runs `trustline recordings seal FILE` after every recorded call, so
start-up is paid per call. Target: under 300 ms wall time each. Prints the median and worst
of a few runs of each (wall and CPU), from a fresh interpreter every time.

    .venv/bin/python bench/cli_startup.py [RUNS]
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["recordings", "seal", "--help"], ["--version"], ["stats", "--help"])


def run_once(argv: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "agent", *argv],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    run_once(["--help"])  # warm the file cache and the bytecode
    print(f"{'command':<34} {'wall median':>12} {'wall max':>9} {'cpu median':>11}")
    for argv in COMMANDS:
        times = [run_once(argv) for _ in range(runs)]
        walls = [w for w, _ in times]
        cpus = [c for _, c in times]
        print(
            f"trustline {' '.join(argv):<24} {statistics.median(walls) * 1000:>9.0f} ms"
            f" {max(walls) * 1000:>6.0f} ms {statistics.median(cpus) * 1000:>8.0f} ms"
        )


if __name__ == "__main__":
    main()
