"""Outbound caller-ID decisions end to end: real FastAGI sockets, real SQLite, injected clock."""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent.app import Agent
from agent.clock import FrozenClock
from agent.store.db import SqliteDatabase
from tests.conftest import PARIS, AgentFactory, agi_port, write_config
from tests.fake_asterisk import run_session


def pools(
    cap: int = 80,
    numbers: int = 3,
    on_exhausted: str = "fallback",
    min_active: int = 0,
    extra: str = "",
    reserve: int = 1,
    threshold: int = 60,
    reports: int = 2,
) -> str:
    entries = ",\n".join(
        f'  {{ number = "+3314200{i:04d}", name = "Clinique StMarc" }}'
        for i in range(1, numbers + 1)
    )
    reserve_entries = ",\n".join(
        f'  {{ number = "+3314299{i:04d}", name = "Clinique Resrv" }}'
        for i in range(1, reserve + 1)
    )
    return f"""
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = {cap}
intensive_threshold = {threshold}
reports_to_quarantine = {reports}
warmup_days = 3

[pools.reminders]
purposes = ["reminder"]
fallback = "+33142000001"
on_exhausted = "{on_exhausted}"
min_active = {min_active}
numbers = [
{entries}
]
{extra}
[pools.reserve]
reserve = true
numbers = [
{reserve_entries}
]
"""


async def call(
    agent: Agent, callee: str = "0142123456", purpose: str = "reminder", **kw: Any
) -> dict[str, str]:
    session = await run_session("127.0.0.1", agi_port(agent), args=[purpose, callee], **kw)
    return session.variables


@pytest.mark.parametrize("sessions,numbers,cap", [(40, 3, 10), (25, 3, 10), (30, 3, 10)])
async def test_concurrent_sessions_never_exceed_caps(
    make_agent: AgentFactory, sessions: int, numbers: int, cap: int
) -> None:
    agent = await make_agent(
        pools(cap=cap, numbers=numbers, on_exhausted="refuse", reserve=1), deadline_ms=5000
    )
    assert agent.outbound is not None
    results = await asyncio.gather(*(call(agent) for _ in range(sessions)))
    statuses = Counter(r["TRUSTLINE_STATUS"] for r in results)
    assert statuses["ok"] == min(sessions, numbers * cap)
    assert statuses["refused"] == sessions - min(sessions, numbers * cap)
    per_number = Counter(r["CALLERID(num)"] for r in results if r["TRUSTLINE_STATUS"] == "ok")
    assert max(per_number.values()) <= cap
    # The store agrees with what was handed out (once the lease held in memory is returned).
    assert agent.db is not None
    await agent.outbound.return_leases()
    rows = await agent.db.fetchall("SELECT number, used FROM daily_usage")
    assert {r[0]: r[1] for r in rows} == dict(per_number)


async def test_two_agents_on_one_store_share_the_cap(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    config = pools(cap=5, numbers=2, on_exhausted="refuse")
    first = await make_agent(config)
    second = await make_agent(config)  # same data dir, same SQLite file: a second agent process
    results = await asyncio.gather(*(call(a) for a in [first, second] * 8))
    ok = [r for r in results if r["TRUSTLINE_STATUS"] == "ok"]
    assert len(ok) == 10
    assert max(Counter(r["CALLERID(num)"] for r in ok).values()) == 5


async def test_local_number_then_least_used_then_least_recent(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    extra = ""
    agent = await make_agent(
        pools(numbers=2).replace(
            '  { number = "+33142000002", name = "Clinique StMarc" }',
            '  { number = "+33142000002", name = "Clinique StMarc" },\n  { number = "+33472000003", name = "Clinique Lyon" }',
        )
        + extra
    )
    # A Lyon callee gets the Lyon (04 72) number while it is under its cap.
    lyon = await call(agent, "04 72 11 22 33")
    assert lyon["CALLERID(num)"] == "+33472000003" and lyon["TRUSTLINE_REASON"] == "local_number"
    # Paris callees alternate between the two Paris numbers: least used first.
    first = await call(agent, "0142123456")
    clock.advance(1)
    second = await call(agent, "0142123456")
    assert {first["CALLERID(num)"], second["CALLERID(num)"]} == {"+33142000001", "+33142000002"}
    # A callee elsewhere (Marseille) gets the least used number of the whole pool: Lyon's has 1,
    # the Paris ones 1 each; the least recently used wins the tie.
    clock.advance(1)
    other = await call(agent, "0491000000")
    assert other["CALLERID(num)"] == "+33472000003"


async def test_cap_resets_at_midnight_in_the_pools_time_zone(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 11, 17, 23, 58, tzinfo=PARIS))
    agent = await make_agent(pools(cap=2, numbers=1, on_exhausted="refuse"))
    assert [(await call(agent))["TRUSTLINE_STATUS"] for _ in range(3)] == ["ok", "ok", "refused"]
    # 23:30 UTC is already the next day in Paris (UTC+1): the cap is fresh.
    clock.set(datetime(2026, 11, 18, 0, 0, 30, tzinfo=PARIS))
    assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"


async def test_on_exhausted_modes(make_agent: AgentFactory) -> None:
    fallback = await make_agent(pools(cap=1, numbers=1, on_exhausted="fallback"))
    await call(fallback)
    answer = await call(fallback)
    assert answer["TRUSTLINE_STATUS"] == "exhausted"
    assert answer["CALLERID(num)"] == "+33142000001"  # the pool's fallback number
    assert answer["TRUSTLINE_REASON"] == "pool_exhausted"


async def test_on_exhausted_refuse(make_agent: AgentFactory) -> None:
    agent = await make_agent(pools(cap=1, numbers=1, on_exhausted="refuse"))
    await call(agent)
    answer = await call(agent)
    assert answer["TRUSTLINE_STATUS"] == "refused"
    assert "CALLERID(num)" not in answer


async def test_on_exhausted_borrow_reserve(make_agent: AgentFactory) -> None:
    agent = await make_agent(pools(cap=1, numbers=1, on_exhausted="borrow_reserve", reserve=1))
    await call(agent)
    borrowed = await call(agent)
    assert borrowed["TRUSTLINE_STATUS"] == "ok"
    assert borrowed["CALLERID(num)"] == "+33142990001"
    assert borrowed["TRUSTLINE_REASON"] == "borrowed_reserve"
    # The reserve number has its own cap too: then the pool's fallback.
    assert (await call(agent))["TRUSTLINE_STATUS"] == "exhausted"


async def test_three_intensive_days_earn_a_48h_rest(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(cap=3, numbers=2, threshold=2, on_exhausted="refuse"))
    assert agent.outbound is not None
    rested = "+33142000001"
    for day in range(3):
        clock.set(datetime(2026, 11, 17 + day, 10, 0, tzinfo=PARIS))
        # Both numbers get 2 calls a day: intensive (threshold 2) three days running.
        for _ in range(4):
            assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"
        await agent.outbound.flush()  # the rest is written in the background, in milliseconds
    # Day 4 and day 5 (48 h from midnight): both numbers rest, nothing to hand out.
    for when in (
        datetime(2026, 11, 20, 8, 0, tzinfo=PARIS),
        datetime(2026, 11, 21, 23, 0, tzinfo=PARIS),
    ):
        clock.set(when)
        answer = await call(agent)
        assert answer["TRUSTLINE_STATUS"] == "refused", when
    clock.set(datetime(2026, 11, 22, 0, 1, tzinfo=PARIS))
    back = await call(agent)
    assert back["TRUSTLINE_STATUS"] == "ok"
    assert rested in {back["CALLERID(num)"], "+33142000002"}


async def test_two_intensive_days_then_a_quiet_one_earn_no_rest(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(cap=5, numbers=1, threshold=2, on_exhausted="refuse"))
    for day, calls in ((17, 2), (18, 2), (19, 1), (20, 2)):
        clock.set(datetime(2026, 11, day, 10, 0, tzinfo=PARIS))
        for _ in range(calls):
            assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"
    clock.set(datetime(2026, 11, 21, 10, 0, tzinfo=PARIS))
    assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"


async def test_two_spam_reports_in_a_day_quarantine_and_the_reserve_takes_over(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(numbers=2, min_active=2, reserve=1))
    assert agent.db is not None
    assert agent.outbound is not None
    first = await agent.outbound.report_spam("01 42 00 00 01", "ivr")
    assert first.ours and not first.quarantined
    second = await agent.outbound.report_spam("+33142000001", "agent")
    assert second.quarantined
    numbers = {(await call(agent))["CALLERID(num)"] for _ in range(6)}
    assert "+33142000001" not in numbers
    assert "+33142990001" in numbers  # promoted from the reserve
    alerts = await agent.db.fetchall("SELECT kind, pool FROM alerts ORDER BY id")
    assert [tuple(a) for a in alerts] == [
        ("number_quarantined", "reminders"),
        ("reserve_promoted", "reminders"),
    ]
    # The promoted number warms up: day 0 of a 3-day ramp allows a quarter of its cap.
    rows = {r["number"]: r for r in agent.outbound.number_rows()}
    assert rows["+33142990001"]["cap"] == 20
    assert rows["+33142000001"]["state"] == "quarantined"
    # An admin reinstates: the pool has its own numbers again and the reserve number goes back.
    assert await agent.outbound.reinstate("+33142000001")
    rows = {r["number"]: r for r in agent.outbound.number_rows()}
    assert rows["+33142000001"]["state"] == "active"
    assert rows["+33142990001"]["pool"] == "reserve"


async def test_reports_on_different_days_do_not_quarantine(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(numbers=2))
    assert agent.outbound is not None
    await agent.outbound.report_spam("+33142000001", "ivr")
    clock.advance(86400)
    result = await agent.outbound.report_spam("+33142000001", "ivr")
    assert not result.quarantined and result.reports_today == 1


async def test_quarantine_ends_after_quarantine_days(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(numbers=1, on_exhausted="refuse", reports=1))
    assert agent.outbound is not None
    await agent.outbound.report_spam("+33142000001", "ivr")
    assert (await call(agent))["TRUSTLINE_STATUS"] == "refused"
    clock.advance(7 * 86400 + 1)
    assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"


async def test_report_for_a_number_not_ours_is_recorded_and_ignored(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    from agent import phone

    agent = await make_agent(pools())
    assert agent.db is not None and agent.outbound is not None
    result = await agent.outbound.report_spam("+1 212 555 0100", "ivr")
    assert not result.ours and not result.quarantined and result.state == "unknown"
    assert "2125550100" not in result.number
    rows = await agent.db.fetchall("SELECT * FROM spam_reports")
    assert len(rows) == 1 and rows[0]["ours"] == 0
    # A stranger's number is stored as the keyed hash callees get, never in clear.
    key = (tmp_path / "data" / "callee-hash.key").read_bytes()
    assert rows[0]["number"] == phone.keyed_hash(key, "+12125550100")
    assert "2125550100" not in str(tuple(rows[0]))


async def test_a_report_says_the_numbers_real_state(make_agent: AgentFactory) -> None:
    agent = await make_agent(pools(numbers=2, reports=2))
    assert agent.db is not None and agent.outbound is not None
    first = await agent.outbound.report_spam("+33142000001", "ivr")
    assert (first.quarantined, first.state) == (False, "in_pool")
    second = await agent.outbound.report_spam("+33142000001", "ivr")
    assert (second.quarantined, second.state) == (True, "quarantined")
    # A third report does not quarantine again, but the number is still out of its pool.
    third = await agent.outbound.report_spam("+33142000001", "ivr")
    assert (third.quarantined, third.state, third.reports_today) == (False, "quarantined", 3)
    junk = await agent.outbound.report_spam("abc", "cli")
    assert (junk.ours, junk.state) == (False, "invalid")
    row = await agent.db.fetchone("SELECT COUNT(*) FROM spam_reports")
    assert row is not None
    assert row[0] == 3


async def test_deadline_holds_when_the_store_stalls(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await make_agent(pools(), deadline_ms=200)
    assert agent.outbound is not None
    assert agent.db is not None
    assert isinstance(agent.db, SqliteDatabase)  # locks the SQLite file
    # Another process holds the database's write lock: every claim waits on it.
    blocker = sqlite3.connect(agent.db.path, timeout=10)  # the agent may be writing
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        answer = await call(agent)
        elapsed = loop.time() - started
    finally:
        blocker.rollback()
        blocker.close()
    assert answer["TRUSTLINE_STATUS"] == "fallback"
    assert answer["TRUSTLINE_REASON"] == "deadline"
    assert answer["CALLERID(num)"] == "+33142000001"
    assert elapsed < 5  # answered long before the store's 10 s busy timeout
    misses = agent.metrics.deadline_misses.labels("outbound")._value.get()
    assert misses == 1
    # Once the store is back (SQLite's busy handler retries the waiting claim within ~100 ms),
    # calls are decided again.
    statuses = []
    for _ in range(50):
        statuses.append((await call(agent))["TRUSTLINE_STATUS"])
        if statuses[-1] == "ok":
            break
        await asyncio.sleep(0.1)
    assert statuses[-1] == "ok", statuses
    # The stalled call's claim went through after it got the fallback: that unit served a
    # later call or went back; the store counts exactly the calls that were handed a number.
    await agent.outbound.return_leases()
    used = await agent.db.fetchone("SELECT SUM(used) FROM daily_usage")
    assert used is not None
    assert used[0] == statuses.count("ok") == 1


async def test_audit_rows_hold_a_hash_of_the_callee_never_the_number(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(pools())
    assert agent.db is not None and agent.outbound is not None
    await call(agent, "0611223344", overrides={"agi_uniqueid": "1795344829.1"})
    session = await run_session(
        "127.0.0.1", agi_port(agent), args=["reminder", "0611223344", "CASE-42"]
    )
    assert session.variables["TRUSTLINE_STATUS"] == "ok"
    await agent.outbound.flush()
    rows = await agent.db.fetchall("SELECT * FROM call_audit ORDER BY id")
    assert rows[0]["uniqueid"] == "1795344829.1"
    assert rows[0]["status"] == "ok" and rows[0]["pool"] == "reminders"
    assert rows[1]["case_ref"] == "CASE-42"
    dump = "\n".join(str(tuple(r)) for r in rows)
    assert "611223344" not in dump
    assert re.fullmatch(r"[0-9a-f]{64}", rows[0]["callee_hash"])
    assert rows[0]["callee_hash"] == rows[1]["callee_hash"]


async def test_a_bad_reload_keeps_the_running_config(
    make_agent: AgentFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = await make_agent(pools(numbers=1))
    path = tmp_path / "pools.toml"
    write_config(path, pools(numbers=1).replace("daily_cap = 80", "daily_cap = 0"))
    with caplog.at_level(logging.ERROR):
        assert not await agent.reload_config()
    assert "defaults.daily_cap" in caplog.text
    assert (await call(agent))["CALLERID(num)"] == "+33142000001"
    # A good file is taken whole: the new number is handed out.
    write_config(path, pools(numbers=1).replace('"+33142000001"', '"+33142000007"'))
    assert await agent.reload_config()
    assert (await call(agent))["CALLERID(num)"] == "+33142000007"


async def test_the_running_agent_reloads_when_the_file_changes(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await make_agent(pools(numbers=1))
    write_config(
        tmp_path / "pools.toml",
        pools(numbers=1).replace('"+33142000001"', '"+33142000008"'),
    )
    for _ in range(100):
        if "+33142000008" in agent.config.numbers:
            break
        await asyncio.sleep(0.05)
    assert (await call(agent))["CALLERID(num)"] == "+33142000008"


async def test_no_full_phone_number_in_logs(
    make_agent: AgentFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Our own log lines, unfiltered: the code masks numbers itself.
    with caplog.at_level(logging.DEBUG, logger="agent"):
        agent = await make_agent(pools(numbers=2, min_active=2, reports=1))
        assert agent.outbound is not None
        await call(agent, "0611223344")
        await agent.outbound.report_spam("+33142000001", "ivr")
        await agent.outbound.report_spam("+12125550100", "ivr")
        await call(agent, "0611223344")
        await run_session("127.0.0.1", agi_port(agent), script="nosuch", args=["0611223344"])
    text = caplog.text
    assert "reserve_promoted" in text or "promoted" in text
    for full in ("611223344", "142000001", "2125550100", "142990001"):
        assert full not in text, full


def test_the_log_filter_masks_numbers_in_tracebacks_too() -> None:
    import io

    from agent.logs import setup_logging

    stream = io.StringIO()
    setup_logging("DEBUG", stream)
    log = logging.getLogger("agent.test")
    try:
        try:
            dict[str, str]()["+33612345678"]
        except KeyError:
            log.exception("lookup failed for %s", "0612345678")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "KeyError" in text and "***5678" in text
    assert "612345678" not in text


async def test_metrics_report_decisions_latency_and_usable_numbers(
    make_agent: AgentFactory,
) -> None:
    import aiohttp

    agent = await make_agent(pools(numbers=2))
    assert agent.http_address is not None
    await call(agent)
    host, port = agent.http_address
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{host}:{port}/metrics") as resp:
            text = await resp.text()
        async with http.get(f"http://{host}:{port}/readyz") as resp:
            ready = await resp.json()
        async with http.get(f"http://{host}:{port}/healthz") as resp:
            assert resp.status == 200
    assert 'trustline_outbound_decisions_total{reason="local_number",status="ok"} 1.0' in text
    assert 'trustline_pool_usable_numbers{pool="reminders"} 2.0' in text
    assert "trustline_agi_decision_seconds_bucket" in text
    assert ready["status"] == "ready"


def test_day_boundary_helpers_follow_the_zone() -> None:
    from agent.outbound.policy import local_day, next_midnight

    # 23:30 UTC on 17 Nov is 00:30 on 18 Nov in Paris.
    ts = datetime.fromisoformat("2026-11-17T23:30:00+00:00").timestamp()
    assert local_day(ts, PARIS).isoformat() == "2026-11-18"
    # The day clocks go forward has 23 hours, the day they go back 25: the next midnight is
    # local midnight, not 24 h after the last one.
    spring = datetime(2026, 3, 29, 0, 30, tzinfo=PARIS).timestamp()
    assert next_midnight(spring, PARIS) - spring == 22.5 * 3600
    autumn = datetime(2026, 10, 25, 0, 30, tzinfo=PARIS).timestamp()
    assert next_midnight(autumn, PARIS) - autumn == 24.5 * 3600
    assert datetime.fromtimestamp(next_midnight(autumn, PARIS), PARIS) == datetime(
        2026, 10, 26, tzinfo=PARIS
    )


async def test_rest_is_earned_when_the_threshold_is_crossed_by_concurrent_calls(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(pools(cap=10, numbers=1, threshold=2, on_exhausted="refuse"))
    assert agent.outbound is not None
    for day in (17, 18):
        clock.set(datetime(2026, 11, day, 10, 0, tzinfo=PARIS))
        for _ in range(2):
            assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"
    clock.set(datetime(2026, 11, 19, 10, 0, tzinfo=PARIS))
    # The third intensive day is reached while several calls are in flight at once.
    results = await asyncio.gather(*(call(agent) for _ in range(6)))
    assert all(r["TRUSTLINE_STATUS"] == "ok" for r in results)
    await agent.outbound.flush()
    clock.set(datetime(2026, 11, 20, 10, 0, tzinfo=PARIS))
    assert (await call(agent))["TRUSTLINE_STATUS"] == "refused"


async def test_a_rest_decided_by_one_agent_is_kept_by_the_other(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    config = pools(cap=10, numbers=1, threshold=2, on_exhausted="refuse")
    first = await make_agent(config)
    second = await make_agent(config)  # same SQLite file: a second agent
    assert first.outbound is not None and second.outbound is not None
    for day in (17, 18, 19):
        clock.set(datetime(2026, 11, day, 10, 0, tzinfo=PARIS))
        for _ in range(2):
            assert (await call(first))["TRUSTLINE_STATUS"] == "ok"
    await first.outbound.flush()
    clock.set(datetime(2026, 11, 20, 10, 0, tzinfo=PARIS))
    for _ in range(100):  # the second agent's store watch ticks every second
        if second.outbound.number_rows()[0]["state"] == "resting":
            break
        await asyncio.sleep(0.05)
    assert (await call(second))["TRUSTLINE_STATUS"] == "refused"


async def test_a_store_stall_gives_fallbacks_not_refusals_and_spends_no_cap(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(pools(cap=3, numbers=1, on_exhausted="refuse"), deadline_ms=200)
    assert agent.db is not None and agent.outbound is not None
    assert isinstance(agent.db, SqliteDatabase)  # locks the SQLite file
    blocker = sqlite3.connect(agent.db.path, timeout=10)  # the agent may be writing
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        during = [(await call(agent))["TRUSTLINE_STATUS"] for _ in range(4)]
    finally:
        blocker.rollback()
        blocker.close()
    # Every call went out with the fallback; none was refused because claims were queued.
    assert during == ["fallback"] * 4
    after = []
    for _ in range(50):
        after.append((await call(agent))["TRUSTLINE_STATUS"])
        if after.count("ok") == 2:
            break
        await asyncio.sleep(0.05)
    assert after[-2:] == ["ok", "ok"]
    # The claim already sent when the store stalled served a later call: no cap unit went to
    # a call that got the fallback, so the whole cap of 3 is handed out, then no more.
    await agent.outbound.return_leases()
    rows = await agent.db.fetchall("SELECT used FROM daily_usage")
    assert [r[0] for r in rows] == [2]
    assert [(await call(agent))["TRUSTLINE_STATUS"] for _ in range(2)] == ["ok", "refused"]
    await agent.outbound.return_leases()
    rows = await agent.db.fetchall("SELECT used FROM daily_usage")
    assert [r[0] for r in rows] == [3]


async def test_a_claim_pending_at_midnight_does_not_block_the_next_day(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    extra = """
[pools.surveys]
purposes = ["survey"]
numbers = [ { number = "+33142000050", name = "Clinique StMarc" } ]
"""
    clock.set(datetime(2026, 11, 17, 23, 59, 59, tzinfo=PARIS))
    agent = await make_agent(
        pools(cap=2, numbers=1, on_exhausted="refuse", extra=extra), deadline_ms=5000
    )
    assert agent.db is not None
    assert isinstance(agent.db, SqliteDatabase)  # locks the SQLite file
    assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"  # 1 of 2 on the 17th
    blocker = sqlite3.connect(agent.db.path, timeout=10)  # the agent may be writing
    blocker.execute("BEGIN EXCLUSIVE")
    late = asyncio.create_task(call(agent))  # its claim, for the 17th, waits on the store
    await asyncio.sleep(0.1)
    clock.set(datetime(2026, 11, 18, 0, 0, 30, tzinfo=PARIS))
    other = asyncio.create_task(call(agent, purpose="survey"))  # rolls the day
    await asyncio.sleep(0.1)
    blocker.rollback()
    blocker.close()
    assert (await late)["TRUSTLINE_STATUS"] == "ok"
    await other
    clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=PARIS))
    assert [(await call(agent))["TRUSTLINE_STATUS"] for _ in range(2)] == ["ok", "ok"]
