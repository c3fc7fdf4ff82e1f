"""Soak: the callback set's memory from 100,000 to 1,000,000 outbound calls.

Usage: .venv/bin/python bench/soak.py [--calls 1000000] [--per-day 100000] [--dir /dev/shm]

A real SQLite store receives outbound calls to distinct patients (100,000 a day by default,
so all 1,000,000 stay inside the 14-day callback window: the worst case), in batches as the
outbound writer commits them; after each batch, inbound calls are screened for callbacks
(half of them patients we called, half strangers) through ``RecentCallees``, which folds the
new calls in. The process's RSS (VmRSS) is read after each batch. The baseline is the RSS at
100,000 calls in the same run; the goal is at most 10% growth to 1,000,000. The last line is
``soak: <RSS> = <ratio> of <RSS at 100,000 calls> [goal <= 1.10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.screening.callees import WAIT_SECONDS, RecentCallees
from agent.screening.repo import ScreeningRepo
from agent.store import open_database

DAY = 86400.0
BATCH = 5_000  # rows per commit, as the outbound writer groups them
LOOKUPS = 50


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS in /proc/self/status")


def callee(n: int) -> str:
    return hashlib.sha256(b"soak %d" % n).hexdigest()


async def soak(folder: Path, calls: int, per_day: float) -> None:
    db = await open_database(folder / "trustline.sqlite3")
    callees = RecentCallees(ScreeningRepo(db))
    rng = random.Random(7)
    start = 1_800_000_000.0
    now = start
    marks: dict[int, float] = {}
    hits = lookups = 0
    began = time.perf_counter()
    try:
        for first in range(0, calls, BATCH):
            count = min(BATCH, calls - first)
            await db.executemany(
                "INSERT INTO call_audit (at, purpose, status, reason, callee_hash)"
                " VALUES (?, 'reminder', 'ok', 'soak', ?)",
                ((start + (first + i) * DAY / per_day, callee(first + i)) for i in range(count)),
            )
            now = start + (first + count) * DAY / per_day + WAIT_SECONDS
            since = now - 14 * DAY
            for k in range(LOOKUPS):
                patient = k % 2 == 0
                n = rng.randrange(first + count) if patient else calls + rng.randrange(10**9)
                found = await callees.called_since(callee(n), since, now)
                if found != patient:
                    raise SystemExit(f"wrong callback answer for call {n} (patient={patient})")
                hits += found
                lookups += 1
            done = first + count
            if done % 100_000 == 0:
                marks[done] = rss_mb()
                print(
                    f"{done:>9} calls  RSS {marks[done]:6.1f} MB  ({len(callees)} folded,"
                    f" {time.perf_counter() - began:5.1f} s)",
                    flush=True,
                )
    finally:
        await callees.close()
        await db.close()
    print(f"{lookups} callback look-ups, {hits} callbacks recognised, every answer exact")
    base, last = marks[100_000], marks[max(marks)]
    print(
        f"soak: {last:.1f} MB RSS at {max(marks):,} calls = {last / base:.2f} of {base:.1f} MB"
        " at 100,000 calls [goal <= 1.10]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shm = Path("/dev/shm")
    parser.add_argument("--dir", type=Path, default=shm if shm.is_dir() else None)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--per-day", type=float, default=100_000)
    args = parser.parse_args()
    if args.calls < 200_000 or args.calls % 100_000:
        raise SystemExit("--calls must be a multiple of 100,000, at least 200,000")
    folder = Path(tempfile.mkdtemp(prefix="trustline-soak-", dir=args.dir))
    try:
        asyncio.run(soak(folder, args.calls, args.per_day))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
