"""Compliance's background work shares the event loop and the store with the calls: the attempt
tail gives the loop back a page at a time and still counts exactly, neither it nor the callees
read leave the cycle collector anything to walk per callee, reads go beside a claim's write
transaction instead of behind it, and the chain finds where it stopped through its index. Real
SQLite files; no timing."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import phone
from agent.clock import FrozenClock
from agent.compliance.attempts import PAGE, AttemptIndex
from agent.compliance.callees import Callees
from agent.compliance.config import parse_compliance
from agent.compliance.repo import CHAINED_UP_TO, ComplianceRepo
from agent.compliance.service import ComplianceService
from agent.outbound.repo import AuditRecord, OutboundRepo
from agent.store import Database, open_database

NOW = 1_795_000_000.0
DAY = 86400.0
WEEK = 7 * DAY
KEY = b"k" * 32
PATIENT = "0612345678"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    store = await open_database(tmp_path / "data" / "trustline.sqlite3")
    yield store
    await store.close()


def row(i: int, callee: str, *, purpose: str = "survey", status: str = "ok", age: float = 60.0
        ) -> AuditRecord:  # fmt: skip
    return AuditRecord(
        NOW - age, f"u{i}", purpose, "clinic", "+33142000001", status, "least_used", callee, None
    )


@pytest.mark.parametrize("slots", [2**21, 3])  # 3: nearly every callee shares a slot
async def test_a_long_tail_gives_the_loop_back_every_page_and_counts_exactly(
    db: Database, slots: int
) -> None:
    repo = ComplianceRepo(db)
    index = AttemptIndex(repo, slots=slots)
    index.configure(["survey"], WEEK)
    await index.refresh(NOW)  # nothing yet
    callees = [f"h{c:04d}" for c in range(700)]
    records = []
    for i in range(5 * PAGE // 2):
        callee = callees[i % len(callees)]
        if i % 10 == 3:
            records.append(row(i, callee, status="blocked"))  # never dialled: not an attempt
        elif i % 10 == 7:
            records.append(row(i, callee, purpose="results"))  # not a limited purpose
        elif i % 50 == 11:
            records.append(row(i, callee, age=8 * DAY))  # before the period
        else:
            records.append(row(i, callee, age=float(i % 97)))
    # Two calls this process let out, whose rows are in the tail: counted once, not twice.
    index.note((callees[0], "survey"), NOW - 1.0, "u0")
    index.note((callees[1], "survey"), NOW - 1.0, "u1")
    await OutboundRepo(db).write_audit(records, {})

    turns = 0
    tail = asyncio.create_task(index.refresh(NOW))
    while not tail.done():  # what calls would get while the tail goes on: turns of the loop
        turns += 1
        await asyncio.sleep(0)
    await tail
    assert turns >= len(records) // PAGE  # the loop ran between pages, not once per tail

    expected: dict[str, int] = dict.fromkeys(callees, 0)
    for r in records:
        if r.status == "ok" and r.purpose == "survey" and r.at >= NOW - WEEK:
            expected[str(r.callee_hash)] += 1
    for callee in callees:
        assert await index.count((callee,), "survey", NOW - WEEK) == expected[callee]
    assert sum(expected.values()) > PAGE  # the tail spans several pages
    # The next tail starts where this one stopped.
    await OutboundRepo(db).write_audit([row(99_999, callees[5])], {})
    await index.refresh(NOW)
    assert await index.count((callees[5],), "survey", NOW - WEEK) == expected[callees[5]] + 1


async def test_the_attempt_index_leaves_the_cycle_collector_nothing_per_callee(
    db: Database,
) -> None:
    await OutboundRepo(db).write_audit([row(i, f"h{i:05d}") for i in range(3000)], {})
    index = AttemptIndex(ComplianceRepo(db))
    index.configure(["survey"], WEEK)
    gc.collect()
    before = len(gc.get_objects())
    await index.refresh(NOW)
    index.note(("h00001", "survey"), NOW)
    gc.collect()
    assert await index.count(("h00001",), "survey", NOW - WEEK) == 2
    # A full collection walks every tracked object: 3,000 callees must not add 3,000 more.
    assert len(gc.get_objects()) - before < 300


async def test_the_opt_out_reload_and_attempt_tail_do_not_wait_behind_a_write(
    db: Database,
) -> None:
    await db.start_checkpoints()  # as the agent starts its store: a connection for reads
    limits = parse_compliance("[limits]\nsurvey = { attempts = 2, days = 7 }\n")
    service = ComplianceService(db, FrozenClock(NOW), KEY, limits.compliance)
    await service.start(refresh_seconds=None)
    hashed = phone.keyed_hash(KEY, phone.to_e164(PATIENT, "FR"))
    await OutboundRepo(db).write_audit([row(1, hashed), row(2, hashed)], {})

    holding, release = asyncio.Event(), asyncio.Event()

    async def long_write() -> None:  # a claim's transaction, held open
        async with db.transaction():
            holding.set()
            await release.wait()

    writer = asyncio.create_task(long_write())
    await holding.wait()
    refresh = asyncio.create_task(service.refresh())
    done, _ = await asyncio.wait({refresh}, timeout=30)  # a hang guard, not a speed figure
    release.set()
    await writer
    assert refresh in done, "the refresh waited for the write transaction to end"
    await refresh
    assert (await service.check("survey", PATIENT)).status == "attempts_exceeded"


async def test_the_chain_finds_where_it_stopped_through_its_index(db: Database) -> None:
    plan = await db.fetchall("EXPLAIN QUERY PLAN " + CHAINED_UP_TO, ("call_audit",))
    details = " ".join(str(r[3]) for r in plan)
    assert "INDEX audit_chain_row" in details, details  # not a scan of the whole chain
    # And it answers as before: per table, the highest row chained.
    limits = parse_compliance("[limits]\nsurvey = { attempts = 2, days = 7 }\n")
    service = ComplianceService(db, FrozenClock(NOW), KEY, limits.compliance)
    await OutboundRepo(db).write_audit([row(i, f"h{i}") for i in range(3)], {})
    assert await service.chain.extend(NOW) == 3
    await service.chain.record_purge("call_audit", NOW - 40 * DAY, 0, NOW)
    assert await service.repo.chained_up_to("call_audit") == 3
    assert await service.repo.chained_up_to("admin_audit") == 0
    assert (await service.chain.verify()).ok


async def test_callees_read_once_leave_the_cycle_collector_nothing_per_callee(
    db: Database,
) -> None:
    limits = parse_compliance("[limits]\nsurvey = { attempts = 2, days = 7 }\n")
    service = ComplianceService(db, FrozenClock(NOW), KEY, limits.compliance)
    await service.start(refresh_seconds=None)

    async def reminder_run(first: int, patients: int) -> None:  # each once, let out, counted
        for i in range(first, first + patients):
            callee = f"06{12000000 + i:08d}"
            assert (await service.check("survey", callee)).allowed  # and counted

    await reminder_run(1, 4200)  # phone.parse keeps the last 4,096 numbers it parsed
    gc.collect()
    gc.collect()
    before = len(gc.get_objects())
    await reminder_run(5000, 3000)
    gc.collect()
    gc.collect()  # a tuple holding tuples is dropped at the second pass
    assert len(gc.get_objects()) - before < 300  # not one object or more per callee kept
    # Read again, from what was kept: counted, then refused at the limit.
    assert (await service.check("survey", "0612000001")).allowed
    assert (await service.check("survey", "0612000001")).status == "attempts_exceeded"


def test_kept_callees_answer_as_read_and_the_oldest_used_goes_first() -> None:
    callees = Callees(KEY, size=2)
    reunion = callees.get("0692123456", "FR", "Europe/Paris")
    assert reunion is not None and reunion[2] == "Indian/Reunion"
    forms = callees.audit_hashes("0692123456", "FR", reunion)
    assert len(forms) == 2  # +262 692..., and +33 692... as written before it was known
    assert callees.written("0692123456", "FR", reunion) in forms  # +33 692..., as dialled
    assert callees.get("1234", "FR", "Europe/Paris") is None  # an extension
    written = callees.written("0692123456", "FR", reunion)
    assert callees.get("0692123456", "FR", "Europe/Paris") == (*reunion[:5], forms, written)
    callees.get("0612345678", "FR", "Europe/Paris")  # "1234" was used least lately: it goes
    assert ("1234", "FR") not in callees._kept and len(callees._kept) == 2
    again = Callees(KEY).get("0692123456", "FR", "Europe/Paris")
    assert again is not None and again[:5] == reunion[:5]
