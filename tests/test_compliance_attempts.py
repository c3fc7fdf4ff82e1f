"""Attempt limits count exactly in a fixed amount of memory: a table of recent slots answers
most callees from memory, the store counts the others. When the store cannot count a callee
who may have been called in the period, the call is held back a minute, never let out
uncounted; a callee memory proves uncalled still goes out. Real SQLite files, and PostgreSQL
behind a TCP forwarder taken down."""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent import phone
from agent.clock import FrozenClock
from agent.compliance import snapshot
from agent.compliance.attempts import AttemptIndex
from agent.compliance.config import parse_compliance
from agent.compliance.repo import ComplianceRepo
from agent.compliance.service import ComplianceService
from agent.errors import StoreError
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.store import Database, open_database
from tests.postgres_schema import fresh_schema
from tests.test_postgres_agents import free_port
from tests.test_postgres_down import Forwarder

NOW = 1_795_000_000.0
WEEK = 7 * 86400.0
KEY = b"k" * 32
LIMITS = "[limits]\nsurvey = { attempts = 2, days = 7 }\n"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    store = await open_database(tmp_path / "data" / "trustline.sqlite3")
    yield store
    await store.close()


def called(i: int, callee_hash: str, age: float = 3600.0) -> AuditRecord:
    return AuditRecord(
        NOW - age, f"u{i}", "survey", "clinic", "+33142000001", "ok", "least_used",
        callee_hash, None,
    )  # fmt: skip


def hashed(number: str) -> str:
    return phone.keyed_hash(KEY, phone.to_e164(number, "FR"))


@contextlib.asynccontextmanager
async def store_behind_forwarder() -> AsyncIterator[tuple[Forwarder, Database]]:
    """A fresh PostgreSQL schema reached through a TCP forwarder that can be taken down."""
    async for url in fresh_schema():
        real = urlsplit(url)
        forwarder = Forwarder(free_port(), real.hostname or "", real.port or 5432)
        await forwarder.up()
        via = real._replace(netloc=f"{real.username}@127.0.0.1:{forwarder.port}").geturl()
        store = await open_database(via)
        try:
            yield forwarder, store
        finally:
            await forwarder.down()
            await store.close()


async def test_memory_does_not_grow_with_the_callees_called_in_the_period(db: Database) -> None:
    await OutboundRepo(db).write_audit([called(i, f"h{i:06d}") for i in range(20_000)], {})
    index = AttemptIndex(ComplianceRepo(db))
    index.configure(["survey"], WEEK)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await index.refresh(NOW)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A copy of every callee took ~400 bytes each: 8 MB here. The table is fixed.
    assert kept < 200_000, kept
    assert await index.count(("h000042",), "survey", NOW - WEEK) == 1
    assert await index.count(("h000042",), "survey", NOW - 60.0) == 0  # before that period
    assert await index.count(("never",), "survey", NOW - WEEK) == 0


async def test_the_store_counts_a_callee_whose_slot_is_shared(db: Database) -> None:
    repo = ComplianceRepo(db)
    index = AttemptIndex(repo, slots=1)  # every callee shares the one slot
    index.configure(["survey"], WEEK)
    await OutboundRepo(db).write_audit([called(1, "a"), called(2, "a"), called(3, "b")], {})
    await index.refresh(NOW)
    assert index.known(("c",), "survey", NOW - WEEK) is None  # "maybe": memory cannot tell
    assert await index.count(("c",), "survey", NOW - WEEK) == 0
    assert await index.count(("a",), "survey", NOW - WEEK) == 2
    # A call let out here counts at once, and once only when its own row is read.
    index.note(("b", "survey"), NOW, "u4")
    assert await index.count(("b",), "survey", NOW - WEEK) == 2
    await OutboundRepo(db).write_audit([called(4, "b", age=0.0)], {})
    assert await index.count(("b",), "survey", NOW - WEEK) == 2  # the row is not read yet
    await index.refresh(NOW)
    assert await index.count(("b",), "survey", NOW - WEEK) == 2


async def test_on_a_deadline_the_limit_holds_from_memory_or_the_call_waits(db: Database) -> None:
    loaded = parse_compliance(LIMITS)
    service = ComplianceService(db, FrozenClock(NOW), KEY, loaded.compliance)
    await OutboundRepo(db).write_audit([called(1, hashed("0612345678"))], {})
    await service.start(refresh_seconds=None)
    # Never called in the period: memory proves it, the limit is counted without the store.
    for _ in range(2):  # each let through, hence counted
        assert service.check_offline("survey", "0612000001").allowed
    assert service.check_offline("survey", "0612000001").status == "attempts_exceeded"
    # Called before (its row is in the store): without I/O nobody can count it, it waits.
    waits = service.check_offline("survey", "0612345678")
    assert (waits.status, waits.reason) == ("outside_window", "attempts_unknown")
    assert waits.next_window == "2026-11-18T12:07:40+01:00"  # NOW plus a minute, Paris time
    assert service.check_offline("results", "0612345678").allowed  # no limit for results
    assert (await service.check("survey", "0612345678")).allowed  # the store says 1 of 2


async def test_when_the_store_is_down_a_callee_it_must_count_waits() -> None:
    async with store_behind_forwarder() as (forwarder, store):
        loaded = parse_compliance(LIMITS)
        service = ComplianceService(store, FrozenClock(NOW), KEY, loaded.compliance)
        await OutboundRepo(store).write_audit(
            [called(1, hashed("0612345678")), called(2, hashed("0612345679"))], {}
        )
        await service.start(refresh_seconds=None)
        assert (await service.check("survey", "0612345678", "x1")).allowed  # 1 of 2
        service.release("survey", "0612345678", "x1")  # it did not go out after all
        await forwarder.down()  # every connection cut
        waits = await service.check("survey", "0612345679")  # called, never counted
        assert (waits.status, waits.reason) == ("outside_window", "attempts_unknown")
        assert (await service.check("survey", "0612000002")).allowed  # never called
        # Counted by the store a moment ago, its calls kept: memory still knows.
        assert (await service.check("survey", "0612345678", "x2")).allowed  # 1 of 2
        assert (await service.check("survey", "0612345678")).status == "attempts_exceeded"
        await forwarder.up()
        assert (await service.check("survey", "0612345679")).allowed  # 1 of 2
        assert (await service.check("survey", "0612345679")).status == "attempts_exceeded"


async def test_a_longer_period_on_reload_is_counted_by_the_store_until_read(db: Database) -> None:
    await OutboundRepo(db).write_audit(
        [called(i, hashed("0612345678"), age=10 * 86400.0) for i in range(2)], {}
    )
    service = ComplianceService(db, FrozenClock(NOW), KEY, parse_compliance(LIMITS).compliance)
    await service.start(refresh_seconds=None)
    assert (await service.check("survey", "0612345678")).allowed  # 10 days ago: not in 7
    longer = parse_compliance("[limits]\nsurvey = { attempts = 2, days = 14 }\n").compliance
    service.apply_config(longer, region="FR", timezone="Europe/Paris")  # as a reload does
    # The table has not read the longer period yet: the store counts, exactly.
    assert (await service.check("survey", "0612345678")).status == "attempts_exceeded"
    assert (await service.check("survey", "0612000003")).allowed
    await service.refresh()
    assert (await service.check("survey", "0612345678")).status == "attempts_exceeded"
    assert (await service.check("survey", "0612000003")).allowed
    # A callee's first call is read back from the store, the second is not written yet:
    # reading the period again (a reload) counts each once.
    assert (await service.check("survey", "0612000005", "u3")).allowed
    await OutboundRepo(db).write_audit([called(3, hashed("0612000005"), age=0.0)], {})
    await service.refresh()  # its row is read: no longer pending
    assert (await service.check("survey", "0612000005", "u4")).allowed  # 1 of 2
    longest = parse_compliance("[limits]\nsurvey = { attempts = 3, days = 30 }\n").compliance
    service.apply_config(longest, region="FR", timezone="Europe/Paris")
    assert (await service.check("survey", "0612000005", "u5")).allowed  # 2 of 3, reloading
    await service.refresh()
    assert (await service.check("survey", "0612000005", "u6")).status == "attempts_exceeded"


async def test_an_agent_that_never_read_earlier_calls_lets_no_limited_call_out(
    tmp_path: Path,
) -> None:
    async with store_behind_forwarder() as (forwarder, store):
        await OutboundRepo(store).write_audit([called(1, hashed("0612345678"))], {})
        await forwarder.down()  # down before this agent read anything
        copy = tmp_path / "optouts.json"
        snapshot.write(copy, set(), NOW - 60)  # opt-outs are known from the agent's copy
        loaded = parse_compliance(LIMITS)
        service = ComplianceService(store, FrozenClock(NOW), KEY, loaded.compliance, snapshot=copy)
        with pytest.raises(StoreError):
            await service.start(refresh_seconds=None)
        for callee in ("0612345678", "0612000004"):  # called before, or not: nobody knows
            waits = await service.check("survey", callee)
            assert (waits.status, waits.reason) == ("outside_window", "attempts_unknown")
            waits = service.check_offline("survey", callee)
            assert (waits.status, waits.reason) == ("outside_window", "attempts_unknown")
        assert (await service.check("results", "0612345678")).allowed  # not limited
        await forwarder.up()  # up, but the history not read yet: the store counts
        assert (await service.check("survey", "0612345678")).allowed  # 1 of 2, counted
        # A call let out, not read back yet: the store cannot tell it from the others.
        waits = await service.check("survey", "0612345678")
        assert (waits.status, waits.reason) == ("outside_window", "attempts_unknown")
        await service.refresh()
        assert (await service.check("survey", "0612345678")).status == "attempts_exceeded"


async def test_a_call_let_out_here_counts_once_whatever_the_times_and_other_agents(
    db: Database,
) -> None:
    index = AttemptIndex(ComplianceRepo(db))
    index.configure(["survey"], WEEK)
    await index.refresh(NOW)
    # The audit row's time is taken when the decision starts, before the call is noted.
    index.note(("a", "survey"), NOW, "u1")
    await OutboundRepo(db).write_audit([called(1, "a", age=0.5)], {})
    await index.refresh(NOW)
    assert await index.count(("a",), "survey", NOW - WEEK) == 1
    # Another agent's call to the same callee, read first, is not ours: ours still counts.
    index.note(("a", "survey"), NOW, "u2")
    await OutboundRepo(db).write_audit([called(3, "a", age=-1.0)], {})  # uniqueid "u3"
    await index.refresh(NOW)
    assert await index.count(("a",), "survey", NOW - WEEK) == 3
    await OutboundRepo(db).write_audit([called(2, "a", age=0.2)], {})
    await index.refresh(NOW)
    assert await index.count(("a",), "survey", NOW - WEEK) == 3


async def late_batch(store: Database, held: asyncio.Event, go: asyncio.Event) -> None:
    """Another agent's audit batch: ids taken now, committed when ``go`` is set."""
    async with store.transaction() as tx:
        for uniqueid, callee in (("late-1", "mine"), ("late-2", "patient")):
            await tx.execute(
                "INSERT INTO call_audit (at, uniqueid, purpose, pool, number, status, reason,"
                " callee_hash) VALUES (?, ?, 'survey', 'clinic', '+33142000001', 'ok',"
                " 'least_used', ?)",
                (NOW - 30, uniqueid, callee),
            )
        held.set()
        await go.wait()


@pytest.mark.parametrize("slots", [2**21, 1])  # 1: the store counts every callee
async def test_a_row_committed_after_a_higher_id_is_counted_once_on_postgresql(
    slots: int,
) -> None:
    """On PostgreSQL an id is taken at INSERT and seen at COMMIT: another agent's audit batch
    commits after ours, whose ids are higher, were read. Its calls are not skipped, and this
    agent's own call among them is counted once before and after."""
    async for url in fresh_schema():
        ours, theirs = await open_database(url), await open_database(url)
        try:
            index = AttemptIndex(ComplianceRepo(ours), slots=slots)
            index.configure(["survey"], WEEK)
            await index.refresh(NOW)
            index.note(("mine", "survey"), NOW - 30, "late-1")
            held, go = asyncio.Event(), asyncio.Event()

            batch = asyncio.create_task(late_batch(theirs, held, go))
            await held.wait()
            await OutboundRepo(ours).write_audit([called(9, "other")], {})  # a higher id
            await index.refresh(NOW)
            assert await index.count(("mine",), "survey", NOW - WEEK) == 1  # pending
            go.set()
            await batch
            assert await index.count(("mine",), "survey", NOW - WEEK) == 1  # not read yet
            await index.refresh(NOW)
            assert await index.count(("mine",), "survey", NOW - WEEK) == 1
            assert index.known(("patient",), "survey", NOW - WEEK) is None  # not "uncalled"
            assert await index.count(("patient",), "survey", NOW - WEEK) == 1
        finally:
            await theirs.close()
            await ours.close()


async def test_a_callee_the_store_counted_is_then_counted_from_memory_exactly(
    db: Database,
) -> None:
    """A patient called again (a survey's retries): the store counts once, then memory
    answers, kept exact as calls by this agent and others are read back."""
    repo = ComplianceRepo(db)
    index = AttemptIndex(repo)
    index.configure(["survey"], WEEK)
    rows = [called(1, "a", age=7200.0), called(2, "a"), called(3, "a", age=8 * 86400.0)]
    await OutboundRepo(db).write_audit(rows, {})
    await index.refresh(NOW)
    assert index.known(("a",), "survey", NOW - WEEK) is None  # called lately: ask the store
    assert await index.count(("a",), "survey", NOW - WEEK) == 2
    assert index.known(("a",), "survey", NOW - WEEK) == 2  # now from memory
    await OutboundRepo(db).write_audit([called(4, "a", age=60.0)], {})  # another agent's
    await index.refresh(NOW)
    truth = await repo.attempt_count(("a",), "survey", NOW - WEEK, None)
    assert index.known(("a",), "survey", NOW - WEEK) == truth == 3
    assert index.known(("a",), "survey", NOW - 3600.0) == 2  # a shorter period
