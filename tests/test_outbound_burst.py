"""Bursts on a small pool (issue 16 item 3): real FastAGI sockets, real SQLite, default deadline.

With enough capacity, a burst on three numbers is answered ``ok``; a call that got a fallback
spends no cap unit: the store's count equals the calls that were handed a number.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter

from agent.app import Agent
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import run_session
from tests.test_outbound_engine import pools


async def _burst(
    agent: Agent, calls: int, on_fallback: asyncio.Event | None = None
) -> list[dict[str, str]]:
    port = agi_port(agent)

    async def call(i: int) -> dict[str, str]:
        found = (await run_session("127.0.0.1", port, args=["reminder", f"06{i:08d}"])).variables
        if on_fallback is not None and found.get("TRUSTLINE_STATUS") == "fallback":
            on_fallback.set()
        return found

    return list(await asyncio.gather(*(call(i) for i in range(calls))))


def _store_counts(agent: Agent) -> dict[str, int]:
    """What the store counts once the agent stopped (and gave back what it held)."""
    with contextlib.closing(sqlite3.connect(agent.settings.database_path)) as conn:
        rows = conn.execute("SELECT number, used FROM daily_usage").fetchall()
    return {r[0]: r[1] for r in rows if r[1]}


def _handed(results: list[dict[str, str]]) -> dict[str, int]:
    return dict(Counter(r["CALLERID(num)"] for r in results if r["TRUSTLINE_STATUS"] == "ok"))


async def test_a_burst_of_200_on_three_numbers_is_answered_ok(make_agent: AgentFactory) -> None:
    # Claims for one number go out together: a few round trips serve the whole burst. Were
    # they queued one per batch (~67 round trips in a row), a loaded machine would miss even
    # this 2 s deadline. The 250 ms figure is measured in bench/claims.py, not asserted here.
    agent = await make_agent(pools(cap=80, numbers=3), deadline_ms=2000)
    results = await _burst(agent, 200)
    statuses = Counter(r["TRUSTLINE_STATUS"] for r in results)
    assert statuses["ok"] >= 198, statuses
    await agent.stop()
    assert _store_counts(agent) == _handed(results)


async def test_a_burst_of_500_during_a_store_stall_spends_no_cap_on_fallbacks(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(pools(cap=200, numbers=3))  # default 250 ms deadline
    blocker = sqlite3.connect(agent.settings.database_path, timeout=10)  # the agent may be writing
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the store...
    fell_back = asyncio.Event()

    async def release() -> None:  # ...until calls have fallen back (however slow the machine)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fell_back.wait(), 10)
        await asyncio.sleep(0.3)  # claims sent before the deadline are still waiting: let them
        blocker.rollback()

    try:
        results, _ = await asyncio.gather(_burst(agent, 500, fell_back), release())
    finally:
        blocker.close()
    statuses = Counter(r["TRUSTLINE_STATUS"] for r in results)
    assert statuses["fallback"] > 0 and set(statuses) <= {"ok", "fallback"}, statuses
    # Claims sent before the deadline passed landed after it: none of them is spent.
    await agent.stop()
    assert _store_counts(agent) == _handed(results)
