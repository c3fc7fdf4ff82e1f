"""Inbound screening speed, against outbound decisions and a bare FastAGI exchange, same run.

Run by hand:  .venv/bin/python bench/inbound.py [--sessions 1000] [--rounds 3]
              .venv/bin/python bench/inbound.py --open-loop 500 [--duration 4]

Prints sessions/s and p50/p99 latency for
  (a) bare     - an asyncio FastAGI server answering fixed commands, no policy, no store
  (b) outbound - `trustline`'s agent deciding caller IDs (real config, real SQLite), with the
                 outbound bench's single callee, and (out-dist) a different callee each call
                 as a real reminder run has
  (c) inbound  - the same agent screening a mix of real-world caller IDs: patients, callbacks
                 of numbers the outbound run called, withheld, invalid, premium, our own numbers,
                 international; every attestation form (each decision stored, callbacks looked up)
at 1 and 50 concurrent sessions, then the in-process cost of one decision (pure rules, and the
whole service with its store). The four loads run in interleaved rounds (default 3), each round
with numbers never seen before, and medians are printed: on a shared 2-core machine one run
alone swings by a third. The agent runs in its own process; the load generator speaks
the captured Asterisk bytes (fastagi-inbound.jsonl), as the shipped subroutine calls the
agent (caller number as fourth argument, one TRUSTLINE_ANSWER variable); the bare server sends
one SET VARIABLE too. ``--open-loop RATE`` starts sessions on a fixed schedule instead, for the
agent and the bare server in turn. The last line is
``NAME: <figure> = <ratio> of <baseline> [goal <goal>]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outbound import (  # noqa: E402  (the same load generator as the outbound bench)
    BARE_SERVER,
    SCRIPT,
    agent_env,
    free_port,
    load,
    open_loop,
    pools_toml,
    quantiles,
    wait_port,
)
from bench.outbound import one_session as outbound_session  # noqa: E402
from tests.fake_asterisk import header_block  # noqa: E402  (the captured bytes)
from tests.test_dialplan_contract import asterisk_filter  # noqa: E402  (the subroutine's FILTER)

OUTBOUND_CALLEE = "0142123456"
ATTESTATIONS = [
    "A",
    "TN-Validation-Passed-B",
    "C",
    "",
    "TN-Validation-Failed",
    "verstat=No-TN-Validation",
]


def caller_mix(n: int, offset: int = 0) -> list[tuple[str, int]]:
    """(caller ID, callingpres) in proportions an inbound clinic line sees on a bad day.

    ``offset`` gives each round numbers never seen before, so no round runs on a warm cache.
    """
    out = []
    for j in range(n):
        i = offset + j
        kind = j % 20
        if kind < 12:
            out.append((f"06{12000000 + i:08d}", 0))  # patients, each a different number
        elif kind < 14:
            out.append((OUTBOUND_CALLEE, 0))  # callbacks of the number the outbound run called
        elif kind == 14:
            out.append(("anonymous", 32))
        elif kind == 15:
            out.append((f"{i % 997}", 0))  # impossible
        elif kind == 16:
            out.append(("0899123456", 0))  # premium rate
        elif kind == 17:
            out.append(("+33142000000", 0))  # one of our own numbers (pool below)
        elif kind == 18:
            out.append((f"+4479111{i % 100000:05d}", 0))
        else:
            out.append((f"1617555{i % 10000:04d}", 0))
    return out


def inbound_blocks(n: int, offset: int = 0) -> list[bytes]:
    lines = [f"01420000{j:02d}" for j in range(10)]  # ten of our lines
    return [
        header_block(
            "fastagi-inbound.jsonl",
            "inbound?answer=one",
            [
                lines[i % 10],
                ATTESTATIONS[i % len(ATTESTATIONS)],
                "",
                asterisk_filter("0-9+", caller),
            ],
            {
                "agi_callerid": caller,
                "agi_callingpres": str(pres),
                "agi_uniqueid": f"1795344877.{offset + i}",
            },
        )
        for i, (caller, pres) in enumerate(caller_mix(n, offset))
    ]


def verdict_counter(verdicts: Counter[str]) -> Callable[[bytes], None]:
    def count(line: bytes) -> None:
        if line.startswith(b"SET VARIABLE TRUSTLINE_ANSWER"):
            verdict, _, reasons = line.split(b'"')[1].decode().split("|")
            verdicts["failure-policy" if "screening_unavailable" in reasons else "decided"] += 1
            verdicts[verdict] += 1

    return count


async def one_session(port: int, block: bytes, verdicts: Counter[str]) -> float:
    return await outbound_session(port, block, verdict_counter(verdicts))


async def load_many(
    port: int, blocks: list[bytes], concurrency: int, verdicts: Counter[str]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(blocks)

    async def worker() -> None:
        for block in queue:
            latencies.append(await one_session(port, block, verdicts))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


async def decision_cost(decisions: int) -> list[str]:
    """In-process cost of one decision: pure rules, then the service with SQLite."""
    from agent import phone
    from agent.clock import SystemClock
    from agent.config import parse_config
    from agent.screening import rules
    from agent.screening.config import ScreeningConfig
    from agent.screening.service import InboundCall, ScreeningService
    from agent.store import open_database

    phone.preload_metadata()  # as the agent does at start (plans loaded, patterns kept)
    mix = caller_mix(decisions)
    cfg = ScreeningConfig()
    line = rules.read_dialled("0142000000", "FR")
    start = time.perf_counter()
    for caller, pres in mix:
        facts = rules.CallFacts(
            caller=rules.classify_caller(caller, pres, line.region),
            line=line,
            attestation=rules.parse_attestation("TN-Validation-Passed-B"),
            burst_calls=1,
            flood_callers=1,
            callback=False,
        )
        rules.evaluate(facts, cfg)
    pure = (time.perf_counter() - start) / decisions * 1e6
    out = [
        f"rules      {pure:7.1f} us/decision (pure scoring incl. phonenumbers; 60% unseen numbers)"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(pools_toml(20, 1000))
        db = await open_database(Path(tmp) / "s.db")
        service = ScreeningService(
            config_provider=lambda: config, db=db, clock=SystemClock(), hash_key=b"k" * 32
        )
        fresh = caller_mix(decisions, offset=10 * decisions)  # not warmed by the loop above
        start = time.perf_counter()
        for i, (caller, pres) in enumerate(fresh):
            await service.screen(InboundCall(caller, "0142000000", ATTESTATIONS[i % 6], pres))
        await service.flush()
        per = (time.perf_counter() - start) / decisions * 1e6
        await db.close()
    out.append(
        f"service    {per:7.1f} us/decision (rules + lists, windows, callback look-up, stored;"
        " one at a time)"
    )
    for text in out:
        print(text, flush=True)
    return out


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A server process for the run (started before any timing, so blocking is harmless)."""
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def outbound_blocks(n: int, offset: int) -> list[bytes]:
    """A different callee each call, as a real reminder run has."""
    return [
        header_block(
            "fastagi-outbound.jsonl",
            SCRIPT,
            ["reminder", f"06{13000000 + offset + i:08d}", ""],
        )
        for i in range(n)
    ]


LABELS = ("bare", "outbound", "out-dist", "inbound")


def median_line(label: str, concurrency: int, runs: list[tuple[float, float, float]]) -> str:
    rates = sorted(r for r, _, _ in runs)
    p50 = statistics.median(p for _, p, _ in runs)
    p99 = statistics.median(p for _, _, p in runs)
    return (
        f"{label:<8} c={concurrency:<3} {statistics.median(rates):8.0f} sessions/s"
        f" (runs {rates[0]:.0f}..{rates[-1]:.0f})   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
    )


def measured(elapsed: float, latencies: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, q[49] * 1000, q[98] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--open-loop", type=float, metavar="RATE", help="arrivals per second")
    parser.add_argument("--duration", type=float, default=4.0, help="open loop: seconds")
    args = parser.parse_args()
    if args.open_loop:
        await open_loop_main(args.open_loop, args.duration, args.rounds)
        return
    n, rounds = args.sessions, args.rounds
    out_block = header_block("fastagi-outbound.jsonl", SCRIPT, ["reminder", OUTBOUND_CALLEE, ""])
    # Fresh numbers for every round and concurrency (and for the warm-up, offset 0).
    step = n + 200
    in_blocks = {k: inbound_blocks(n, (k + 1) * step) for k in range(2 * rounds)}
    out_blocks = {k: outbound_blocks(n, (k + 1) * step) for k in range(2 * rounds)}
    print(
        f"# {os.cpu_count()} cores, Python {sys.version.split()[0]}; {n} sessions per run;"
        f" {rounds} rounds interleaved (bare, outbound, out-dist, inbound), medians shown",
        flush=True,
    )

    runs: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    verdicts: Counter[str] = Counter()
    bare_port = free_port()
    bare = spawn([sys.executable, "-c", BARE_SERVER, str(bare_port)], dict(os.environ))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pools.toml"
        config.write_text(pools_toml(20, 100_000))
        agi_port = free_port()
        env = agent_env(config, Path(tmp), agi_port)
        agent = spawn([sys.executable, "-m", "agent", "run"], env)  # the agent as deployed
        try:
            wait_port(bare_port)
            wait_port(agi_port)
            for ci, concurrency in enumerate((1, 50)):
                await load(bare_port, [out_block] * 200, concurrency)  # warm-ups
                await load(agi_port, [out_block] * 200, concurrency)
                await load(agi_port, outbound_blocks(200, 0), concurrency)
                await load_many(agi_port, inbound_blocks(200, 0), concurrency, Counter())
                for r in range(rounds):
                    k = ci * rounds + r
                    got = {
                        "bare": await load(bare_port, [out_block] * n, concurrency),
                        "outbound": await load(agi_port, [out_block] * n, concurrency),
                        "out-dist": await load(agi_port, out_blocks[k], concurrency),
                        "inbound": await load_many(agi_port, in_blocks[k], concurrency, verdicts),
                    }
                    for label, (elapsed, lat) in got.items():
                        runs.setdefault((label, concurrency), []).append(measured(elapsed, lat))
                for label in LABELS:
                    print(median_line(label, concurrency, runs[(label, concurrency)]), flush=True)
        finally:
            agent.terminate()
            bare.terminate()
            agent.wait(30)
            bare.wait(30)

    for concurrency in (1, 50):
        rate = statistics.median(r for r, _, _ in runs[("inbound", concurrency)])
        p99 = statistics.median(p for _, _, p in runs[("inbound", concurrency)])

        def ratio(label: str, concurrency: int = concurrency, rate: float = rate) -> str:
            return f"{rate / statistics.median(r for r, _, _ in runs[(label, concurrency)]):.0%}"

        print(
            f"c={concurrency}: inbound {rate:.0f} decisions/s, p99 {p99:.2f} ms; "
            f"inbound/outbound = {ratio('outbound')}, inbound/out-dist = {ratio('out-dist')}"
            f" (target >= 100%), inbound/bare = {ratio('bare')}"
            + (" ; p99 target <= 25 ms" if concurrency == 50 else ""),
            flush=True,
        )
    shown = ", ".join(f"{k}={v}" for k, v in sorted(verdicts.items()))
    print(f"inbound answers (all timed rounds): {shown}", flush=True)
    await decision_cost(args.decisions)
    rate = statistics.median(r for r, _, _ in runs[("inbound", 50)])
    bare_rate = statistics.median(r for r, _, _ in runs[("bare", 50)])
    print(
        f"inbound: {rate:.0f} decisions/s at c=50 = {rate / bare_rate:.2f} of bare [goal >= 0.80]",
        flush=True,
    )


async def open_loop_main(rate: float, duration: float, rounds: int) -> None:
    n = int(rate * duration)
    figures: dict[str, list[tuple[float, float]]] = {}
    bare_port = free_port()
    bare = spawn([sys.executable, "-c", BARE_SERVER, str(bare_port)], dict(os.environ))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pools.toml"
        config.write_text(pools_toml(20, 100_000))
        agi_port = free_port()
        agent = spawn(
            [sys.executable, "-m", "agent", "run"], agent_env(config, Path(tmp), agi_port)
        )
        try:
            wait_port(bare_port)
            wait_port(agi_port)
            for r in range(rounds):
                for label, port in (("bare", bare_port), ("agent", agi_port)):
                    answers: Counter[str] = Counter()
                    blocks = inbound_blocks(n, (2 * r + 1) * n + (n if label == "agent" else 0))
                    if label == "agent":
                        counter = verdict_counter
                        _, lat = await open_loop(port, blocks, rate, 5.0, answers, counter)
                        # Served: screened in time (a verdict, not the failure policy's allow).
                        served = answers["decided"]
                    else:  # the bare server's fixed answer
                        served, lat = await open_loop(port, blocks, rate, 5.0, answers)
                    p99 = quantiles(lat)[1] if len(lat) > 2 else float("inf")
                    figures.setdefault(label, []).append((served / n, p99))
                    print(
                        f"{label:<6} open loop {rate:.0f}/s for {duration:.0f} s: served"
                        f" {served}/{n} ({served / n:.1%}), p99 {p99:.1f} ms,"
                        f" answers {dict(answers)}",
                        flush=True,
                    )
        finally:
            agent.terminate()
            bare.terminate()
            agent.wait(30)
            bare.wait(30)
    served_share = statistics.median(s for s, _ in figures["agent"])
    bare_served = statistics.median(s for s, _ in figures["bare"])
    p99_ratio = statistics.median(p for _, p in figures["agent"]) / statistics.median(
        p for _, p in figures["bare"]
    )
    print(f"open loop: agent p99 = {p99_ratio:.2f}x bare's [goal <= 2]")
    print(
        f"inbound-open-loop-{rate:.0f}: {served_share:.1%} served = {served_share / bare_served:.2f} of bare"
        " [goal >= 0.99]"
    )


if __name__ == "__main__":
    asyncio.run(main())
