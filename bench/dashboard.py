"""How long does each dashboard page take with 500 numbers and a year of call outcomes?

Builds a SQLite store with 5 pools of 100 numbers and a year of outcomes (3 calls a day per
number on average: ~550,000 call rows), starts the real agent on it, signs in through the
sign-in form and times each page over loopback (median of --rounds requests, after one warm-up).
The baseline, in the same run: the same Jinja2 environment rendering a 500-row table from
memory in a bare aiohttp app (what any server-rendered page of this size costs). Goal: every
page under 200 ms. Also prints the outbound decision time while pages are being loaded, next
to the same decisions with the dashboard idle (its queries run on their own connection).

    .venv/bin/python bench/dashboard.py [--rounds 15] [--calls-per-day 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import jinja2
from aiohttp import web

from agent.app import Agent
from agent.settings import Settings
from agent.store import open_database
from agent.tokens.service import TokenService

PARIS = ZoneInfo("Europe/Paris")
POOLS, PER_POOL, DAYS = 5, 100, 365
OUTCOMES = ("answered", "answered", "no_answer", "busy", "congestion")


def number(i: int) -> str:
    return f"+33142{i:06d}"


def pools_toml() -> str:
    parts = ['[defaults]\ntimezone = "Europe/Paris"\nregion = "FR"\ndaily_cap = 80\n']
    for p in range(POOLS):
        first = p * PER_POOL
        numbers = ", ".join(
            f'{{ number = "{number(first + k + 1)}", name = "Clinique {p}" }}'
            for k in range(PER_POOL)
        )
        parts.append(f'[pools.p{p}]\npurposes = ["purpose{p}"]\nnumbers = [{numbers}]\n')
    parts.append(
        f'[pools.reserve]\nreserve = true\nnumbers = [{{ number = "{number(900)}", name = "Clinique R" }}]\n'
    )
    return "\n".join(parts)


def seed(db_path: Path, calls_per_day: float, now: float) -> int:
    rng = random.Random(5)
    rows = []
    uid = 0
    today = datetime.fromtimestamp(now, PARIS).date()
    for back in range(DAYS):
        day = today - timedelta(days=back)
        start = datetime(day.year, day.month, day.day, 8, tzinfo=PARIS).timestamp()
        for i in range(POOLS * PER_POOL):
            for _ in range(rng.randint(0, int(2 * calls_per_day))):
                at = start + rng.uniform(0, 10 * 3600)
                if at >= now:
                    continue
                uid += 1
                outcome = rng.choice(OUTCOMES)
                rows.append((at, f"b.{uid}", f"purpose{i // PER_POOL}", f"p{i // PER_POOL}",
                             number(i + 1), "ok", "least_used", outcome,
                             40 if outcome == "answered" else 0))  # fmt: skip
    with sqlite3.connect(db_path) as conn:
        conn.executemany(
            "INSERT INTO call_audit (at, uniqueid, purpose, pool, number, status, reason,"
            " outcome, talk_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


async def timed(session: aiohttp.ClientSession, url: str, rounds: int) -> float:
    samples = []
    for i in range(rounds + 1):
        t0 = time.perf_counter()
        async with session.get(url, allow_redirects=False) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        if i:  # the first request warms caches
            samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


async def bare_baseline(rounds: int) -> float:
    env = jinja2.Environment(autoescape=True)
    template = env.from_string(
        "<table>{% for r in rows %}<tr><td><a href='/n/{{ r[0] }}'>{{ r[0] }}</a></td>"
        "<td>{{ r[1] }}</td><td>{{ r[2] }}</td><td>{{ r[3] }} / {{ r[4] }}</td></tr>"
        "{% endfor %}</table>"
    )
    rows = [(number(i), "Clinique", "active", i % 80, 80) for i in range(500)]

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=template.render(rows=rows), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as s:
            return await timed(s, f"http://127.0.0.1:{port}/", rounds)
    finally:
        await runner.cleanup()


async def decisions(agent: Agent, count: int) -> float:
    assert agent.outbound is not None
    samples = []
    for i in range(count):
        t0 = time.perf_counter()
        await agent.outbound.decide(f"purpose{i % POOLS}", "0612345678", f"bench.{i}")
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[int(len(samples) * 0.99) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls-per-day", type=float, default=3.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sys.setswitchinterval(0.0005)  # as `trustline run` sets it (agent.app.run_agent)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pools.toml").write_text(pools_toml())
        data = folder / "data"
        data.mkdir(mode=0o700)
        db_path = data / "trustline.sqlite3"
        await (await open_database(db_path)).close()  # migrated
        t0 = time.perf_counter()
        rows = seed(db_path, args.calls_per_day, time.time())
        print(f"seeded {rows} call outcomes over {DAYS} days in {time.perf_counter() - t0:.1f} s")
        settings = Settings(
            config=folder / "pools.toml",
            data_dir=data,
            agi_listen="127.0.0.1:0",
            http_listen="127.0.0.1:0",
            recordings_dir=folder / "monitor",
        )
        agent = Agent(settings)
        await agent.start()
        try:
            assert agent.db is not None and agent.http_address is not None
            _, token = await TokenService(agent.db, agent.clock).create(
                "bench", "operator", expires_days=1, created_by="bench"
            )
            base = "http://{}:{}".format(*agent.http_address)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                async with s.get(base + "/") as r:
                    presign = re.search(r'name="presign" value="([^"]+)"', await r.text())
                assert presign is not None
                async with s.post(
                    base + "/signin",
                    data={"token": token, "presign": presign.group(1)},
                    allow_redirects=False,
                ) as r:
                    assert r.status == 303
                pages = {
                    "overview": "/",
                    "pool": "/pools/p0",
                    "number": f"/numbers/{number(1)}",
                    "alerts": "/alerts",
                    "screening": "/screening",
                }
                times = {
                    name: await timed(s, base + path, args.rounds) for name, path in pages.items()
                }
                api = {
                    "api pools": "/api/v1/pools",
                    "api numbers": "/api/v1/numbers",
                }
                headers = {"Authorization": f"Bearer {token}"}
                async with aiohttp.ClientSession(headers=headers) as api_session:
                    for name, path in api.items():
                        times[name] = await timed(api_session, base + path, args.rounds)
                idle_p99 = await decisions(agent, 400)
                load = asyncio.create_task(timed(s, base + "/pools/p0", 40))
                busy_p99 = await decisions(agent, 400)
                await load
        finally:
            await agent.stop()
    bare = await bare_baseline(args.rounds)
    for name, ms in times.items():
        print(f"{name:<12} {ms:7.1f} ms (median of {args.rounds})")
    print(f"bare 500-row page {bare:.1f} ms")
    print(
        f"decision p99 with pages loading {busy_p99:.2f} ms vs dashboard idle {idle_p99:.2f} ms"
        " (busy machine: indicative)"
    )
    worst = max(times, key=lambda k: times[k])
    print(
        f"dashboard: slowest page ({worst}) {times[worst]:.1f} ms = {times[worst] / bare:.2f}"
        f" of bare 500-row page {bare:.1f} ms [goal < 200 ms]"
    )


if __name__ == "__main__":
    asyncio.run(main())
