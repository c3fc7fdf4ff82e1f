"""``trustline run`` with timers on the call path, for bench/outbound_pg.py ``--trace``.

Run as ``python -m bench.pg_trace`` in place of ``python -m agent run``. It wraps (a bench
instrument, never shipped in the agent): ``Claims.claim_from`` (how long each call waited for
its number, and whether a claim in the store was on its path), ``Claims._refill`` (a call that
found its number's lease dry: was a refill on its way, how old, the lease's size), ``OutboundRepo.grant_many``
(each claim statement's round trip), the FastAGI server's answer (accept to answer, in the
agent), and samples the event loop's lag (how late a 2 ms timer fires: how long a ready task
waits for the CPU). At exit it writes the samples as JSON to ``TRUSTLINE_TRACE_FILE``.

Reading it: when the slowest decisions are those that waited on a claim, the tail is the
database's; when accept-to-answer stays short while the load generator sees long sessions, the
time goes to queues outside the decision (CPU, sockets).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from agent.agi import server as server_module
from agent.outbound import claims as claims_module
from agent.outbound.policy import LEASE_UNITS
from agent.outbound.repo import OutboundRepo

Sample = list[float]
_claimed: ContextVar[list[int] | None] = ContextVar("claimed", default=None)
_samples: dict[str, list[Any]] = {"calls": [], "grants": [], "lag": [], "dry": [], "answers": []}
_asked: dict[str, float] = {}  # number -> when its refill in flight was asked
_lag_task: list[asyncio.Task[None]] = []


def _install_claims() -> None:
    claim_from = claims_module.Claims.claim_from
    batcher_claim = claims_module.ClaimBatcher.claim

    async def timed_claim_from(self: Any, pool: Any, presence: Any, now: float) -> Any:
        marks: list[int] = []
        token = _claimed.set(marks)
        start = time.perf_counter()
        try:
            return await claim_from(self, pool, presence, now)
        finally:
            end = time.perf_counter()
            _samples["calls"].append((end - start, len(marks), end))
            _claimed.reset(token)
            _lag_monitor()

    def counted_claim(self: Any, number: str, day: str, cap: int) -> Any:
        marks = _claimed.get()
        if marks is not None:
            marks.append(1)
        return batcher_claim(self, number, day, cap)

    claims_module.Claims.claim_from = timed_claim_from  # type: ignore[method-assign]
    claims_module.ClaimBatcher.claim = counted_claim  # type: ignore[method-assign]


def _install_refills() -> None:
    refill = claims_module.Claims._refill

    def timed_refill(self: Any, st: Any, *rest: Any) -> None:
        now = time.perf_counter()
        if _claimed.get():  # called after a claim: this call found no lease
            in_flight = st.number in self._refilling
            age = now - _asked.get(st.number, now) if in_flight else -1.0
            lease = self._lease_units.get(st.number, LEASE_UNITS)
            _samples["dry"].append((in_flight, lease, age, now))
        before = st.number in self._refilling
        refill(self, st, *rest)
        if not before and st.number in self._refilling:
            _asked[st.number] = now

    claims_module.Claims._refill = timed_refill  # type: ignore[method-assign, assignment]


def _install_store_and_server() -> None:
    grant_many = OutboundRepo.grant_many
    answer_of_server = server_module.FastAgiServer._answer

    async def timed_grant_many(
        self: Any, claims: Sequence[tuple[str, str, int, int]]
    ) -> dict[str, tuple[int, int]]:
        start = time.perf_counter()
        got = await grant_many(self, claims)
        units = sum(w for *_, w in claims)
        _samples["grants"].append((time.perf_counter() - start, len(claims), units, start))
        return got

    def timed_answer(self: Any, connection: Any, label: str, answer: Any, failure: str) -> None:
        now = time.perf_counter()
        _samples["answers"].append((now - connection.accepted, now))
        answer_of_server(self, connection, label, answer, failure)

    OutboundRepo.grant_many = timed_grant_many  # type: ignore[method-assign]
    server_module.FastAgiServer._answer = timed_answer  # type: ignore[method-assign]


def _lag_monitor() -> None:
    """Start (once, on the agent's loop) a 2 ms timer that records how late it fires."""
    if _lag_task:
        return

    async def sample() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.002)
            _samples["lag"].append((time.perf_counter() - start - 0.002, start))

    _lag_task.append(asyncio.get_running_loop().create_task(sample()))


def cpu_seconds(pids: list[int]) -> tuple[float, float, float, float]:
    """CPU seconds so far: the machine's (all cores), the ``pids``', this process's, and
    PostgreSQL's (its processes running now: the agents' backends live as long as they do)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user): all but
    # idle and iowait; steal is time the hypervisor gave to other machines, lost to us too.
    machine = (sum(fields[:8]) - fields[3] - fields[4]) / _TICK
    postgres = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == "postgres"]
    own = os.times()
    return (
        machine,
        sum(_cpu(Path(f"/proc/{pid}")) for pid in pids),
        own.user + own.system,
        sum(_cpu(p) for p in postgres),
    )


_TICK = os.sysconf("SC_CLK_TCK")


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _cpu(proc: Path) -> float:
    try:
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / _TICK  # utime, stime


def _dump() -> None:
    path = os.environ.get("TRUSTLINE_TRACE_FILE")
    if path:
        with open(path, "w") as out:
            json.dump(_samples, out)


def _q(values: Sequence[float], share: float) -> float:
    """The ``share`` quantile, in ms."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else 0.0


def _load(paths: list[str], warm: int) -> dict[str, list[Any]]:
    """The samples of every agent of a run, from after its ``warm`` first decisions."""
    merged: dict[str, list[Any]] = {key: [] for key in _samples}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        cut = data["calls"][warm - 1][2] if len(data["calls"]) >= warm else 0.0
        for key, rows in data.items():
            merged[key] += [row for row in rows if row[-1] > cut]
    return merged


def summarise(label: str, paths: list[str], warm: int) -> None:
    """Three lines per run: decisions and their claims, leases found dry, statements and lag."""
    data = _load(paths, warm)
    calls, grants, dry = data["calls"], data["grants"], data["dry"]
    waited = [c[0] for c in calls if c[1]]
    cut = _q([c[0] for c in calls], 0.99) / 1000
    slow = [c for c in calls if c[0] >= cut]
    print(
        f"  trace {label}: {len(calls)} decisions, {len(waited)} waited on a claim"
        f" (p50 {_q(waited, 0.5):.1f} p99 {_q(waited, 0.99):.1f} ms), the others p99"
        f" {_q([c[0] for c in calls if not c[1]], 0.99):.2f} ms; slowest 1%:"
        f" {sum(1 for c in slow if c[1])}/{len(slow)} waited on a claim; accept to answer p50"
        f" {_q([a[0] for a in data['answers']], 0.5):.1f} p99"
        f" {_q([a[0] for a in data['answers']], 0.99):.1f} ms",
        flush=True,
    )
    print(
        f"  trace {label}: {len(dry)} leases found dry, (refill on its way, lease):"
        f" {Counter((d[0], d[1]) for d in dry).most_common(4)}, refill age p50"
        f" {_q([d[2] for d in dry], 0.5):.1f} max {_q([d[2] for d in dry], 1.0):.1f} ms",
        flush=True,
    )
    print(
        f"  trace {label}: {len(grants)} claim statements, p50"
        f" {_q([g[0] for g in grants], 0.5):.1f} p99 {_q([g[0] for g in grants], 0.99):.1f} ms,"
        f" {sum(g[2] for g in grants) / max(1, len(grants)):.1f} units each; loop lag p50"
        f" {_q([x[0] for x in data['lag']], 0.5):.1f} p99 {_q([x[0] for x in data['lag']], 0.99):.1f}"
        f" max {_q([x[0] for x in data['lag']], 1.0):.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    _install_claims()
    _install_refills()
    _install_store_and_server()
    atexit.register(_dump)
    from agent.cli import main

    raise SystemExit(main(["run"]))
