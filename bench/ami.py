"""AMI event throughput: parsing and dispatching the captured event streams.

Run by hand:  .venv/bin/python bench/ami.py [--repeat 300]

The stream is every event of the captured calls (answered, busy, no answer, congestion,
inbound, agent down, hangup during AGI, spam UserEvent), byte for byte, repeated. Prints
events/s for:
  (a) parse     - Framer on 64 KiB reads (bytes -> messages, UTF-8 safe)
  (b) dispatch  - (a) plus CallTracker.feed (our calls tracked, outcomes, recordings, reports)
  (c) link      - over loopback TCP: AmiClient reading, AmiLink dispatching into the outcomes
                  intake's work queue, outcomes written to a real SQLite store; timed until
                  the last event has been dispatched
Target: >= 30k events/s for (b) and (c).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.ami.link import AmiLink  # noqa: E402
from agent.ami.protocol import Framer  # noqa: E402
from agent.clock import SystemClock  # noqa: E402
from agent.outbound.astdb import FallbackSync  # noqa: E402
from agent.outcomes.calls import CallTracker  # noqa: E402
from agent.outcomes.intake import OutcomeIntake  # noqa: E402
from agent.settings import Settings  # noqa: E402
from agent.store.db import open_database  # noqa: E402
from tests.ami_replay import EVENT_CAPTURES, ReplayAmiServer, events  # noqa: E402  (the captured bytes)

CAPTURES = EVENT_CAPTURES
TARGET = 30_000


def stream(repeat: int) -> tuple[bytes, int]:
    one = [e for name in CAPTURES for e in events(name)]
    return b"".join(one) * repeat, len(one) * repeat


def reads(data: bytes, size: int = 65536) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def bench_parse(chunks: list[bytes], total: int) -> float:
    framer = Framer()
    start = time.perf_counter()
    count = sum(len(framer.feed(chunk)) for chunk in chunks)
    elapsed = time.perf_counter() - start
    assert count == total, (count, total)
    return total / elapsed


def bench_dispatch(chunks: list[bytes], total: int) -> tuple[float, int]:
    framer, tracker, clock = Framer(), CallTracker(), SystemClock()
    effects = 0
    start = time.perf_counter()
    for chunk in chunks:
        for message in framer.feed(chunk):
            effects += len(tracker.feed(message, clock.now()))
    elapsed = time.perf_counter() - start
    return total / elapsed, effects


class _Outbound:
    """Stand-in for the outbound service: the bench measures the link, not quarantine."""

    async def report_spam(
        self, number_text: str, source: str, *, event_id: str | None = None
    ) -> object:
        return None

    def fallbacks(self) -> dict[str, str]:
        return {"reminder": "+33142000001"}


async def until(done: Callable[[], bool], within: float = 120.0) -> None:
    async with asyncio.timeout(within):
        while True:
            if done():
                return
            await asyncio.sleep(0.001)


async def bench_link(data: bytes, total: int) -> float:
    async def on_recording(uniqueid: str, filename: str) -> None:
        return None

    with tempfile.TemporaryDirectory() as tmp:
        db = await open_database(Path(tmp) / "bench.sqlite3")
        async with ReplayAmiServer() as server:
            settings = Settings(
                data_dir=Path(tmp),
                ami_port=server.port,
                ami_user="trustline",
                ami_secret="capture-secret",
            )
            outbound = _Outbound()
            intake = OutcomeIntake(db, outbound, on_recording, queue_size=1_000_000)
            link = AmiLink(settings, SystemClock(), intake, FallbackSync(outbound.fallbacks))
            await link.start()
            await until(lambda: link.resyncs >= 1)
            before = link.events_seen
            start = time.perf_counter()
            await server.play([data])
            await until(lambda: link.events_seen - before >= total)
            elapsed = time.perf_counter() - start
            await link.flush()
            await link.stop()
        await db.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300, help="copies of the captured stream")
    args = parser.parse_args()
    data, total = stream(args.repeat)
    chunks = reads(data)
    size = len(data) / 1e6
    print(f"stream: {total} events, {size:.1f} MB ({len(CAPTURES)} captures x {args.repeat})")
    parse = bench_parse(chunks, total)
    print(f"(a) parse:    {parse:>10,.0f} events/s")
    dispatch, effects = bench_dispatch(chunks, total)
    print(f"(b) dispatch: {dispatch:>10,.0f} events/s  ({effects} effects)")
    link = asyncio.run(bench_link(data, total))
    print(f"(c) link/TCP: {link:>10,.0f} events/s")
    verdict = "met" if min(dispatch, link) >= TARGET else "MISSED"
    print(f"target >= {TARGET:,} events/s: {verdict}")


if __name__ == "__main__":
    main()
