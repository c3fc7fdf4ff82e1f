"""Start-up and idle memory at 100,000 numbers, against the same agent at 100 numbers.

Run by hand:  .venv/bin/python bench/startup.py [--rounds 3] [--numbers 100000]

Prints, in interleaved rounds (median of rounds, never best-of):
  - load_config of the big pools.toml in this process (the part of start-up the config owns);
  - `trustline run` from process start to /readyz answering 200, first start (empty store) and
    restart (the store knows the numbers), at 100 and at 100,000 numbers;
  - idle RSS of each agent, read from /proc after it has sat ready for a few seconds.
The last line compares the big restart with the small one [goal: start-up <= 3 s, RSS <= 120 MB].
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.claims import pools_toml, rss_mb  # noqa: E402
from bench.outbound import agent_env, cpu_seconds, free_port  # noqa: E402


def ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_agent(config: Path, data: Path, settle: float) -> tuple[float, float, float]:
    """(seconds from process start to /readyz 200, CPU seconds the agent spent until then,
    idle RSS in MB after ``settle`` s). CPU time says more than wall time on a busy machine."""
    env = agent_env(config, data, free_port())
    http_port = int(env["TRUSTLINE_HTTP_LISTEN"].rsplit(":", 1)[1])
    started = time.perf_counter()
    log = (data.parent / f"{data.name}.log").open("wb")  # the agent's warnings, kept out of sight
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run"], env=env, cwd=ROOT, stderr=log, stdout=log
    )
    try:
        while not ready(http_port):
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                raise SystemExit(f"the agent exited with {proc.returncode} before ready:\n{tail}")
            if time.perf_counter() - started > 300:
                raise SystemExit("the agent was not ready within 300 s")
            time.sleep(0.02)
        startup, cpu = time.perf_counter() - started, cpu_seconds(proc.pid)
        time.sleep(settle)
        return startup, cpu, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def load_seconds(config: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one load_config: CPU time says more on a busy machine."""
    from agent.config import load_config

    gc.collect()
    start, cpu = time.perf_counter(), time.process_time()
    load_config(config)
    return time.perf_counter() - start, time.process_time() - cpu


def median(runs: list[tuple[float, float, float]], field: int) -> float:
    return statistics.median(run[field] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--settle", type=float, default=3.0)
    args = parser.parse_args()
    sizes = (100, args.numbers)
    print("# on a shared, busy 2-core machine: compare ratios within this run, not absolutes")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        configs = {}
        for size in sizes:
            configs[size] = tmp / f"pools-{size}.toml"
            configs[size].write_text(pools_toml(size, 100_000))
        loads = [load_seconds(configs[args.numbers]) for _ in range(args.rounds)]
        print(
            f"load_config {args.numbers:>7} numbers: {statistics.median(w for w, _ in loads):.2f} s"
            f" wall, {statistics.median(c for _, c in loads):.2f} s CPU"
        )
        first: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
        restart: dict[int, list[tuple[float, float, float]]] = {s: [] for s in sizes}
        for r in range(args.rounds):
            for size in sizes:  # interleaved: both sizes see the same machine
                data = tmp / f"d{size}-{r}"
                first[size].append(run_agent(configs[size], data, 0))
                restart[size].append(run_agent(configs[size], data, args.settle))
        for size in sizes:
            for label, runs in (("first", first[size]), ("restart", restart[size])):
                print(
                    f"start-up   {size:>7} numbers, {label:<7}: {median(runs, 0):.2f} s wall,"
                    f" {median(runs, 1):.2f} s CPU; RSS {median(runs, 2):.0f} MB"
                )
    big, small = median(restart[args.numbers], 0), median(restart[100], 0)
    big_rss, small_rss = median(restart[args.numbers], 2), median(restart[100], 2)
    print(
        f"startup-rss: {big_rss:.0f} MB at {args.numbers:,} numbers = {big_rss / small_rss:.2f}"
        f" of {small_rss:.0f} MB at 100 [goal <= 120 MB]"
    )
    print(
        f"startup: {big:.2f} s at {args.numbers:,} numbers = {big / small:.2f} of {small:.2f} s"
        f" at 100 [goal <= 3 s]"
    )


if __name__ == "__main__":
    main()
