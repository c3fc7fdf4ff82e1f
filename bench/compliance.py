"""Cost of compliance on an outbound decision: windows, attempt limits and opt-outs enabled.

Run by hand:  .venv/bin/python bench/compliance.py [--decisions 3000]

In one process, real SQLite in a temporary folder, a clock inside the window:
  baseline   - OutboundService.decide (selection and claim), as bench/outbound.py's selection
  compliance - ComplianceService.check (which counts the attempt) then OutboundService.decide,
               as the compliance route runs them: a window with a holiday calendar, a limit on the purpose (counted
               in a call_audit of 50,000 rows over all the callees; high enough never to
               refuse, so both sides do the same work after the check) and 10,000 opt-outs
  check only - the compliance check alone
Each side decides for callees of its own, never seen before in the run (a reminder run calls
each patient once): neither rides on the parses and hashes the other left in the caches, which
made the ratio depend on which side went first.
then, end to end over FastAGI at 50 concurrent sessions (as bench/outbound.py measures: the
one-variable answer, a callee never seen before each call), `trustline run` without and with
the compliance sections in pools.toml (the real agent either way: its collector settled after
start, uvloop), and the bare FastAGI server. The outbound bench's own goals with compliance on
are `bench/outbound.py --compliance`.
Baseline and compliance alternate in slices of 50 decisions within each round (9 rounds after
a warm-up round; which goes first alternates slice by slice), so both see the same machine
load even when other work on the machine comes and goes within a second; figures are medians
of the rounds, the ratio the median of each round's ratio. The goal: compliance adds at most a tenth to a decision, so the outbound bench's goals
(agent/bare >= 50%, p99 <= 25 ms at c=50) keep their margin.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import outbound as outbound_bench  # noqa: E402  (bench/outbound.py: load generator, servers)

from agent import phone  # noqa: E402
from agent.clock import FrozenClock  # noqa: E402
from agent.compliance.config import parse_compliance  # noqa: E402
from agent.compliance.service import ComplianceService  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.outbound.repo import AuditRecord, OutboundRepo  # noqa: E402
from agent.outbound.service import OutboundService  # noqa: E402
from agent.store import open_database  # noqa: E402

KEY = b"k" * 32
POOLS = """
[defaults]
daily_cap = 100000
intensive_threshold = 100000
[pools.surveys]
purposes = ["survey"]
numbers = [
%s
]
"""
COMPLIANCE = """
[windows]
default = "Mon-Fri 09:00-19:00; Sat 09:00-12:00"
holidays = "FR"
[limits]
survey = { attempts = 1000000, days = 7 }
"""
GOAL = 1.10
# `trustline run` with every compliance rule on in pools.toml (none refusing), for the e2e run:
# the sections of `bench/outbound.py --compliance`.
E2E_COMPLIANCE = outbound_bench.COMPLIANCE_TOML
ROWS = 50_000
SLICE = 50  # decisions in a row for one side before the other takes its turn
ROUNDS = 9


async def setup(tmp: Path, count: int) -> tuple[OutboundService, ComplianceService, list[str]]:
    numbers = ",\n".join(
        f'  {{ number = "+33{1 + i % 5}{42000000 + i:08d}", name = "Clinique" }}' for i in range(20)
    )
    phone.preload_metadata()  # as the agent does at start (plans loaded, patterns kept)
    config = parse_config(POOLS % numbers)
    db = await open_database(tmp / "b.sqlite3")
    clock = FrozenClock(datetime(2026, 11, 17, 10, 0, tzinfo=ZoneInfo("Europe/Paris")))
    outbound = OutboundService(db, clock, config, KEY)
    await outbound.start(watch_interval=None)
    loaded = parse_compliance(COMPLIANCE)
    compliance = ComplianceService(db, clock, KEY, loaded.compliance)
    callees = [f"06{12000000 + i:08d}" for i in range(count)]
    now = clock.now()
    hashes = [phone.keyed_hash(KEY, phone.to_e164(c, "FR")) for c in callees]
    records = [
        AuditRecord(
            now - (i % 6) * 86400.0 - i,
            f"u{i}",
            "survey",
            "surveys",
            "+33142000001",
            "ok",
            "least_used",
            hashes[i % count],
            None,
        )
        for i in range(ROWS)
    ]
    await OutboundRepo(db).write_audit(records, {})
    # Opt-outs for another purpose: the set is big, these calls pass.
    await db.executemany(
        "INSERT INTO optouts (callee_hash, purpose, at, source) VALUES (?, 'reminder', ?, 'cli')",
        [(r.callee_hash, now) for r in records[:10_000]],
    )
    await compliance.start(refresh_seconds=None)  # loads the opt-outs and the attempt index
    return outbound, compliance, callees


async def timed(job: Callable[[str], Awaitable[None]], batch: list[str]) -> float:
    """Seconds for the batch."""
    start = time.perf_counter()
    for callee in batch:
        await job(callee)
    return time.perf_counter() - start


async def end_to_end(sessions: int) -> None:
    bare_port = outbound_bench.free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", outbound_bench.BARE_SERVER, str(bare_port)],
            stdout=subprocess.DEVNULL,
        )
    ]
    ports = {"bare": bare_port}
    with tempfile.TemporaryDirectory() as tmp:
        for label, sections in (("agent", ""), ("compliant", E2E_COMPLIANCE)):
            port = outbound_bench.free_port()
            data = Path(tmp) / label
            data.mkdir()
            config = data / "pools.toml"
            config.write_text(outbound_bench.pools_toml(20, 100_000) + sections)
            env = outbound_bench.agent_env(config, data, port)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agent", "run"],
                    env=env,
                    cwd=ROOT,
                    stderr=subprocess.DEVNULL,
                )
            )
            ports[label] = port
        try:
            for port in ports.values():
                outbound_bench.wait_port(port)
            rates: dict[str, list[float]] = {k: [] for k in ports}
            p99s: dict[str, list[float]] = {k: [] for k in ports}
            for port in ports.values():  # warm-up
                await outbound_bench.load(port, outbound_bench.callee_blocks(200, 0), 50)
            for r in range(3):  # interleaved rounds, medians; callees never seen before
                blocks = outbound_bench.callee_blocks(sessions, 1000 + r * sessions)
                for label, port in ports.items():
                    elapsed, lat = await outbound_bench.load(port, blocks, 50)
                    rates[label].append(len(lat) / elapsed)
                    p99s[label].append(statistics.quantiles(lat, n=100)[98] * 1000)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    for label in ports:
        print(
            f"e2e c=50  {label:<9} {statistics.median(rates[label]):7.0f} sessions/s"
            f"   p99 {statistics.median(p99s[label]):6.2f} ms"
        )
    bare = statistics.median(rates["bare"])
    agent = statistics.median(rates["agent"])
    compliant = statistics.median(rates["compliant"])
    p99_compliant = statistics.median(p99s["compliant"])
    print(
        f"e2e c=50: compliant/bare = {compliant / bare:.0%} (outbound target >= 50%),"
        f" compliant/agent = {compliant / agent:.0%},"
        f" compliant p99 {p99_compliant:.2f} ms (target <= 25 ms)"
        f" = {p99_compliant / statistics.median(p99s['agent']):.2f} of the agent's p99"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=2000)
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # as `trustline run` sets it (agent/app.py run_agent)
    with tempfile.TemporaryDirectory() as tmp:
        share = args.decisions
        outbound, compliance, callees = await setup(Path(tmp), (ROUNDS + 1) * 3 * share)

        async def baseline(callee: str) -> None:
            await outbound.decide("survey", callee)

        async def checked(callee: str) -> None:
            verdict = await compliance.check("survey", callee)  # counts the attempt
            assert verdict.allowed, verdict
            await outbound.decide("survey", callee)

        async def check_only(callee: str) -> None:
            await compliance.check("survey", callee)

        jobs = [("base", baseline), ("full", checked)]
        runs: dict[str, list[float]] = {"base": [], "full": [], "alone": [], "ratio": []}
        for r in range(ROUNDS + 1):
            seconds = dict.fromkeys(("base", "full", "alone"), 0.0)
            for first in range(0, share, SLICE):
                flip = (first // SLICE + r) % 2  # which goes first alternates
                for name, job in (*(jobs if flip else jobs[::-1]), ("alone", check_only)):
                    k = 3 * r + ("base", "full", "alone").index(name)  # callees of its own
                    start = k * share + first
                    batch = callees[start : min(start + SLICE, (k + 1) * share)]
                    seconds[name] += await timed(job, batch)
            figures = {name: s / share * 1e6 for name, s in seconds.items()}
            if r:  # the first round warms caches and SQLite pages
                for name, figure in figures.items():
                    runs[name].append(figure)
                runs["ratio"].append(figures["full"] / figures["base"])
        base, full, alone, ratio = (
            statistics.median(runs[k]) for k in ("base", "full", "alone", "ratio")
        )
        await outbound.stop()
        await outbound._repo.db.close()
    print(f"baseline    {base:7.1f} us/decision (outbound selection and claim)")
    print(
        f"compliance  {full:7.1f} us/decision (windows + holidays + limit + opt-out, then the same)"
    )
    print(f"check only  {alone:7.1f} us/check")
    await end_to_end(args.sessions)
    print(
        f"compliance: {full:.1f} us/decision = {ratio:.2f} of {base:.1f} us/decision"
        f" without compliance [goal <= {GOAL:.2f}]"
    )


if __name__ == "__main__":
    asyncio.run(main())
