"""Inbound screening end to end: real FastAGI sockets with the captured inbound session shape,
a real agent and SQLite store, an injected clock."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import contract
from agent.agi.server import FastAgiServer
from agent.app import Agent
from agent.clock import FrozenClock
from agent.datadir import load_hash_key
from agent.screening.route import InboundRoute
from agent.screening.service import ScreeningService
from agent.store import Database, open_database
from tests.conftest import AgentFactory, agi_port
from tests.fake_asterisk import run_session
from tests.test_dialplan_contract import asterisk_filter

FR_LINE = "0142000001"  # as ${EXTEN} arrives from a French trunk
US_LINE = "16175550100"  # as ${EXTEN} arrives from a North American trunk (no '+')

SCREENING_POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc" },
]

[pools.boston]
purposes = ["us-reminder"]
region = "US"
timezone = "America/New_York"
numbers = [ { number = "+16175550100", name = "Boston Clinic" } ]
"""


def install_screening(agent: Agent, clock: FrozenClock) -> ScreeningService:
    """The agent's screening service; built here, as app.py builds it, if app.py does not."""
    wired = getattr(agent, "screening", None)
    if isinstance(wired, ScreeningService) and contract.ROUTE_INBOUND in agent.routes:
        assert agent.clock is clock
        return wired
    assert agent.db is not None
    service = ScreeningService(
        config_provider=lambda: agent.config,
        db=agent.db,
        clock=clock,
        hash_key=load_hash_key(agent.settings.hash_key_path),
    )
    agent.routes[contract.ROUTE_INBOUND] = InboundRoute(service)
    return service


Screening = tuple[Agent, ScreeningService]


@pytest.fixture
async def screening_agent(make_agent: AgentFactory, clock: FrozenClock) -> AsyncIterator[Screening]:
    # Verdicts, not timing: a deadline far from what a busy test machine can stall a call for
    # (the deadline has tests of its own below).
    agent = await make_agent(SCREENING_POOLS, deadline_ms=5000)
    service = install_screening(agent, clock)
    yield agent, service
    await service.close()


async def inbound(
    port: int,
    caller: str,
    dialled: str = FR_LINE,
    attestation: str | None = None,
    callingpres: int = 0,
    **overrides: str,
) -> dict[str, str]:
    # As the subroutine calls the agent: the caller number filtered to digits and '+' as the
    # fourth argument (the agi_callerid header carries the same number, unfiltered).
    args = [dialled, attestation or "", "", asterisk_filter("0-9+", caller)]
    session = await run_session(
        "127.0.0.1",
        port,
        capture_name="fastagi-inbound.jsonl",
        script="inbound",
        args=args,
        overrides={"agi_callerid": caller, "agi_callingpres": str(callingpres), **overrides},
    )
    # The agent answers with exactly the three inbound variables, in contract order.
    assert [c.split(" ")[2] for c in session.commands] == list(contract.INBOUND_SETS)
    assert session.closed_by_agent
    return session.variables


# (caller ID as the trunk sends it, dialled, attestation/verstat, callingpres,
#  expected verdict, expected TRUSTLINE_REASONS)
CASES = [
    # French line: ordinary patients
    ("+33612345678", FR_LINE, "A", 0, "allow", "stir_a"),
    ("0612345678", FR_LINE, None, 0, "allow", "stir_missing"),
    ("33612345678", FR_LINE, "TN-Validation-Passed-B", 0, "allow", "stir_b"),
    ("0033612345678", FR_LINE, "verstat=TN-Validation-Passed", 0, "allow", "stir_passed"),
    ("0142868200", FR_LINE, "A", 0, "allow", "stir_a"),
    ("+33472000003", FR_LINE, "C", 0, "allow", "stir_c"),
    ("0800123456", FR_LINE, None, 0, "allow", "toll_free,stir_missing"),
    # premium rate: a classic call-me-back scam
    ("0899123456", FR_LINE, None, 0, "voicemail", "premium_rate,stir_missing"),
    ("+33899123456", FR_LINE, "A", 0, "voicemail", "premium_rate,stir_a"),
    # withheld / anonymous, by caller ID text and by presentation
    ("", FR_LINE, None, 0, "challenge", "withheld,stir_missing"),
    ("unknown", FR_LINE, None, 67, "challenge", "withheld,stir_missing"),
    ("anonymous", FR_LINE, None, 0, "challenge", "withheld,stir_missing"),
    ("Restricted", FR_LINE, "", 0, "challenge", "withheld,stir_missing"),
    ("0612345678", FR_LINE, "A", 32, "challenge", "withheld,stir_a"),
    ("anonymous", FR_LINE, "TN-Validation-Failed", 0, "block", "withheld,stir_failed"),
    # our own numbers presented from outside: spoofing
    ("+33142000001", FR_LINE, None, 0, "block", "own_number,stir_missing"),
    ("0142000002", FR_LINE, "A", 0, "block", "own_number,stir_a"),
    ("+16175550100", FR_LINE, None, 0, "block", "own_number,international,stir_missing"),
    # invalid and impossible numbers
    ("12", FR_LINE, None, 0, "voicemail", "invalid_number,stir_missing"),
    ("0000000000", FR_LINE, None, 0, "voicemail", "invalid_number,stir_missing"),
    ("+33700000000", FR_LINE, "TN-Validation-Failed", 0, "block", "invalid_number,stir_failed"),
    ("+882123456789", FR_LINE, None, 0, "voicemail", "invalid_number,stir_missing"),
    # international callers
    ("+447911123456", FR_LINE, None, 0, "allow", "international,stir_missing"),
    ("+4930901820", FR_LINE, "TN-Validation-Failed-A", 0, "challenge", "international,stir_failed"),
    ("+212612345678", FR_LINE, "C", 0, "allow", "international,stir_c"),
    ("+18765550123", FR_LINE, None, 0, "allow", "international,stir_missing"),
    # North American line
    ("18005550100", US_LINE, None, 0, "allow", "toll_free,stir_missing"),
    ("6175550123", US_LINE, "A", 0, "allow", "stir_a"),
    ("+12125550123", US_LINE, "TN-Validation-Passed-C", 0, "allow", "stir_c"),
    ("19005551234", US_LINE, None, 0, "voicemail", "premium_rate,stir_missing"),
    ("+16175550100", US_LINE, "A", 0, "block", "own_number,stir_a"),
    ("6175550100", US_LINE, "B", 0, "block", "own_number,stir_b"),
    ("5550100", US_LINE, None, 0, "voicemail", "invalid_number,stir_missing"),
    ("011", US_LINE, "Verification not present", 0, "voicemail", "invalid_number,stir_missing"),
    ("+33612345678", US_LINE, "B", 0, "allow", "international,stir_b"),
    ("+14165550123", US_LINE, "A", 0, "allow", "international,stir_a"),
    ("anonymous", US_LINE, "signature_validation", 0, "block", "withheld,stir_failed"),
    ("12125550123", US_LINE, "success", 0, "allow", "stir_passed"),
]


async def test_real_world_caller_ids_get_the_expected_verdicts(
    screening_agent: Screening, clock: FrozenClock
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    got = []
    for caller, dialled, attestation, pres, _, _ in CASES:
        # The table repeats callers in different spellings: keep each case out of the
        # burst window of the others (bursts have their own test).
        clock.advance(301)
        answer = await inbound(port, caller, dialled, attestation, pres)
        got.append((answer[contract.VAR_VERDICT], answer[contract.VAR_REASONS]))
        score = int(answer[contract.VAR_SCORE])
        assert 0 <= score <= 100
    expected = [(verdict, reasons) for *_, verdict, reasons in CASES]
    mismatches = [
        (case[0], case[1], case[2], g, e)
        for case, g, e in zip(CASES, got, expected, strict=True)
        if g != e
    ]
    assert not mismatches, mismatches


async def test_the_captured_session_is_screened_and_every_decision_stored_without_the_number(
    screening_agent: Screening,
) -> None:
    agent, service = screening_agent
    # The captured call: "Totally Legit" <18005550100> to 15550001111 (not one of our lines).
    session = await run_session(
        "127.0.0.1",
        agi_port(agent),
        capture_name="fastagi-inbound.jsonl",
        script="inbound",
    )
    assert session.variables[contract.VAR_VERDICT] == "allow"
    assert session.variables[contract.VAR_REASONS] == "toll_free,stir_missing"
    await inbound(agi_port(agent), "0612345678", FR_LINE, "C")
    await service.flush()
    assert agent.db is not None
    rows = await agent.db.fetchall("SELECT * FROM screening_decisions ORDER BY id")
    assert [r["verdict"] for r in rows] == ["allow", "allow"]
    assert rows[0]["uniqueid"] == "1795344877.17"
    assert rows[0]["reasons"] == "toll_free,stir_missing"
    assert rows[1]["dialled"] == "+33142000001"  # our own line, in E.164
    assert rows[0]["dialled"] == "***1111"  # not one of ours: masked like any number
    assert rows[1]["caller_masked"] == "***5678" and rows[1]["attestation"] == "c"
    assert re.fullmatch(r"[0-9a-f]{64}", rows[1]["caller_hash"])
    dump = "\n".join(str(tuple(r)) for r in rows)
    assert "612345678" not in dump and "8005550100" not in dump


async def test_allow_list_skips_every_rule(screening_agent: Screening, clock: FrozenClock) -> None:
    agent, service = screening_agent
    port = agi_port(agent)
    before = await inbound(port, "+33899123456", FR_LINE, "TN-Validation-Failed")
    assert before[contract.VAR_VERDICT] == "block"
    await service.add_entry("allow", "0899123456", note="lab results line")
    await service.add_entry("block", "+33899*")  # an allow match wins over the block list
    await service.add_entry("allow", "+44*")
    after = await inbound(port, "+33899123456", FR_LINE, "TN-Validation-Failed")
    assert after == {
        contract.VAR_VERDICT: "allow",
        contract.VAR_SCORE: "0",
        contract.VAR_REASONS: "allowlist",
    }
    # A prefix entry, even for a caller that would trip the burst window.
    for _ in range(6):
        uk = await inbound(port, "447911123456", FR_LINE, "failed")
        assert uk[contract.VAR_REASONS] == "allowlist"
    # The block list still applies to what the allow list does not cover.
    other = await inbound(port, "0899000000", FR_LINE, "A")
    assert other[contract.VAR_VERDICT] == "block"
    assert other[contract.VAR_REASONS] == "blocklist,premium_rate,stir_a"


async def test_burst_from_one_caller_within_the_window(
    screening_agent: Screening, clock: FrozenClock
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    verdicts = []
    for _ in range(4):  # default: the 4th call within 300 s is a burst
        answer = await inbound(port, "0611111111", FR_LINE, "A")
        verdicts.append((answer[contract.VAR_VERDICT], answer[contract.VAR_REASONS]))
        clock.advance(60)
    assert verdicts == [("allow", "stir_a")] * 3 + [("challenge", "stir_a,burst")]
    # Another caller is not affected by this one's burst.
    assert (await inbound(port, "0622222222", FR_LINE, "A"))[contract.VAR_REASONS] == "stir_a"
    # Once the earlier calls leave the window, the caller is ordinary again.
    clock.advance(301)
    assert (await inbound(port, "0611111111", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"


async def test_flood_of_distinct_callers_to_one_line(
    screening_agent: Screening, clock: FrozenClock
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    answers = []
    for i in range(20):  # default: 20 distinct callers to one line within 60 s
        answers.append(await inbound(port, f"06123400{i:02d}", FR_LINE, "A"))
        clock.advance(2)
    assert [a[contract.VAR_VERDICT] for a in answers] == ["allow"] * 19 + ["challenge"]
    assert answers[-1][contract.VAR_REASONS] == "stir_a,flood"
    # Anonymous callers are each counted: a flood of them is still a flood.
    assert (await inbound(port, "anonymous", FR_LINE, "A"))[contract.VAR_REASONS] == (
        "withheld,stir_a,flood"
    )
    # The other line is quiet.
    other = await inbound(port, "0612340099", "0142000002", "A")
    assert other[contract.VAR_REASONS] == "stir_a"
    clock.advance(61)
    assert (await inbound(port, "0612349999", FR_LINE, "A"))[contract.VAR_REASONS] == "stir_a"


async def test_a_patient_calling_back_after_an_outbound_call_gets_through(
    screening_agent: Screening, clock: FrozenClock
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    # A carrier that failed verification: challenged, until we have called this patient.
    first = await inbound(port, "+33611223344", FR_LINE, "TN-Validation-Failed")
    assert (first[contract.VAR_VERDICT], first[contract.VAR_REASONS]) == (
        "challenge",
        "stir_failed",
    )
    out = await run_session("127.0.0.1", port, args=["reminder", "06 11 22 33 44"])
    assert out.variables[contract.VAR_STATUS] == "ok"
    assert agent.outbound is not None
    await agent.outbound.flush()
    clock.advance(3 * 86_400)
    back = await inbound(port, "0611223344", FR_LINE, "TN-Validation-Failed")
    assert back == {
        contract.VAR_VERDICT: "allow",
        contract.VAR_SCORE: "0",
        contract.VAR_REASONS: "stir_failed,callback",
    }
    # Another patient is not recognised; and the memory lasts callback_days (14) only.
    assert "callback" not in (await inbound(port, "0611223345", FR_LINE, "A"))[contract.VAR_REASONS]
    clock.advance(12 * 86_400)
    late = await inbound(port, "0611223344", FR_LINE, "TN-Validation-Failed")
    assert late[contract.VAR_VERDICT] == "challenge"


async def test_bad_input_keeps_the_server_serving(screening_agent: Screening) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    # Not FastAGI at all, an oversized header line, a session closed before its blank line.
    for junk in (
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"agi_callerid: " + b"9" * 20_000 + b"\n",
        b"agi_network: yes\nagi_network_script: inbound\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(junk)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
    # Strangers choose their caller ID: huge, non-digits, stray bytes, a quote; and junk
    # arguments from a misconfigured dialplan. Each gets an answer.
    odd = [
        ("1" * 900, FR_LINE, "A", "invalid_number"),
        # The subroutine's FILTER leaves no digit of this: no number, as if withheld.
        ('"; SET VARIABLE X', FR_LINE, None, "withheld"),
        ("+33 6 12 34 56 78", FR_LINE, "a", "stir_a"),
        ("06\u00e912", FR_LINE, None, "invalid_number"),
        ("0612345678", "", "verstat=" + "x" * 800, "stir_missing"),
        ("0612345678", "not-a-number", "Z", "stir_missing"),
    ]
    for caller, dialled, attestation, reason in odd:
        answer = await inbound(port, caller, dialled, attestation)
        assert answer[contract.VAR_VERDICT] in contract.VERDICTS
        assert reason in answer[contract.VAR_REASONS].split(",")
    bad_pres = await inbound(port, "0612345678", FR_LINE, "A", agi_callingpres="abc")
    assert bad_pres[contract.VAR_REASONS] == "stir_a"
    # And an ordinary call after all that.
    assert (await inbound(port, "0698765432", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"


async def test_a_stalled_store_answers_allow_within_the_deadline(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(SCREENING_POOLS, deadline_ms=200)
    service = install_screening(agent, clock)
    assert agent.db is not None
    port = agi_port(agent)
    # Another writer holds the store: the callback look-up waits behind it.
    async with agent.db.transaction():
        answer = await inbound(port, "0612345678", FR_LINE, "A")
    assert answer == {
        contract.VAR_VERDICT: "allow",
        contract.VAR_SCORE: "0",
        contract.VAR_REASONS: "screening_unavailable,deadline",
    }
    assert agent.metrics.deadline_misses.labels("inbound")._value.get() == 1
    # Store back: decided again.
    assert (await inbound(port, "0612345678", FR_LINE, "A"))[contract.VAR_REASONS] == "stir_a"
    await service.close()


async def test_a_store_that_fails_degrades_gracefully(tmp_path: Path, clock: FrozenClock) -> None:
    from agent.config import parse_config

    config = parse_config(SCREENING_POOLS)

    async def serve(db_name: str) -> tuple[FastAgiServer, ScreeningService, Database]:
        db = await open_database(tmp_path / db_name)
        service = ScreeningService(
            config_provider=lambda: config, db=db, clock=clock, hash_key=b"k" * 32
        )
        server = FastAgiServer({contract.ROUTE_INBOUND: InboundRoute(service)}, deadline=1.0)
        await server.start("127.0.0.1", 0)
        return server, service, db

    # A store that was never readable: nothing to screen with, the call is allowed.
    server, _, db = await serve("never.sqlite3")
    await db.close()
    try:
        answer = await inbound(server.sockets[0][1], "0142000002", FR_LINE, "A")
    finally:
        await server.stop()
    assert answer == {
        contract.VAR_VERDICT: "allow",
        contract.VAR_SCORE: "0",
        contract.VAR_REASONS: "screening_unavailable,internal_error",
    }

    # A store that goes away later: screening goes on with the lists and callbacks it has.
    server, service, db = await serve("later.sqlite3")
    try:
        port = server.sockets[0][1]
        assert (await inbound(port, "0612345678", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"
        await db.close()
        clock.advance(60)  # past every refresh interval: the refreshes fail
        spoof = await inbound(port, "0142000002", FR_LINE, "A")
        assert (spoof[contract.VAR_VERDICT], spoof[contract.VAR_REASONS]) == (
            "block",
            "own_number,stir_a",
        )
        assert (await inbound(port, "0612345679", FR_LINE, "C"))[contract.VAR_VERDICT] == "allow"
    finally:
        await server.stop()
        await service.close()  # the decisions it could not store are logged, not raised


async def test_arguments_may_come_in_the_script_query_string(
    screening_agent: Screening, clock: FrozenClock
) -> None:
    agent, _ = screening_agent
    session = await run_session(
        "127.0.0.1",
        agi_port(agent),
        capture_name="fastagi-inbound.jsonl",
        script="inbound?dialled=0142000001&verstat=TN-Validation-Passed-A",
        args=[],
        overrides={"agi_callerid": "+33142000002"},
    )
    assert session.variables[contract.VAR_VERDICT] == "block"
    assert session.variables[contract.VAR_REASONS] == "own_number,stir_a"


async def test_while_the_store_is_slow_only_the_first_call_waits(
    make_agent: AgentFactory, clock: FrozenClock
) -> None:
    agent = await make_agent(SCREENING_POOLS, deadline_ms=200)
    service = install_screening(agent, clock)
    assert agent.db is not None
    port = agi_port(agent)
    # Warm: lists and callback copy loaded, store healthy.
    assert (await inbound(port, "0612345678", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"
    clock.advance(6)  # a quiet spell: the next call waits for a fresh callback copy
    got = []
    async with agent.db.transaction():  # another writer holds the store
        for _ in range(4):
            answer = await inbound(port, "0142000002", FR_LINE, "A")  # spoof of our number
            got.append((answer[contract.VAR_VERDICT], answer[contract.VAR_REASONS]))
            clock.advance(0.5)  # traffic: no quiet spell any more
    # The first call joined the refresh and missed its deadline; the others are screened
    # from the copy in memory instead of queueing behind the same stuck refresh.
    assert got[0] == ("allow", "screening_unavailable,deadline")
    assert [verdict for verdict, _ in got[1:]] == ["block"] * 3, got
    assert all(reasons.startswith("own_number,stir_a") for _, reasons in got[1:]), got
    await service.close()


async def test_a_ten_digit_us_line_is_read_against_our_numbers(
    screening_agent: Screening,
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    # The trunk delivers +1 617 555 0100 as 10 digits; the default region is FR.
    spoof = await inbound(port, "6175550100", "6175550100", "A")
    assert (spoof[contract.VAR_VERDICT], spoof[contract.VAR_REASONS]) == (
        "block",
        "own_number,stir_a",
    )
    patient = await inbound(port, "2125550123", "6175550100", "A")
    assert (patient[contract.VAR_VERDICT], patient[contract.VAR_REASONS]) == ("allow", "stir_a")


async def inbound_verified(port: int, caller: str, *args: str) -> dict[str, str]:
    """AGI(agi://.../inbound,<dialled>,<attestation>,<verify_result>), as the lead's dialplan."""
    session = await run_session(
        "127.0.0.1",
        port,
        capture_name="fastagi-inbound.jsonl",
        script="inbound",
        args=list(args),
        overrides={"agi_callerid": caller, "agi_callingpres": "0"},
    )
    assert session.closed_by_agent
    return session.variables


@pytest.mark.parametrize(
    ("verify_result", "verdict", "reasons"),
    [
        ("Verification successful", "allow", "stir_a"),
        ("Signature verification failed", "challenge", "stir_failed"),
        ("Verification mismatch", "challenge", "stir_failed"),
        ("Verification not present", "allow", "stir_missing"),
    ],
)
async def test_a_third_argument_verify_result_gates_the_attestation(
    screening_agent: Screening, verify_result: str, verdict: str, reasons: str
) -> None:
    agent, _ = screening_agent
    port = agi_port(agent)
    answer = await inbound_verified(port, "0612345678", FR_LINE, "A", verify_result)
    assert (answer[contract.VAR_VERDICT], answer[contract.VAR_REASONS]) == (verdict, reasons)
    # The 2-argument form still works.
    two = await inbound_verified(port, "0612345679", FR_LINE, "A")
    assert two[contract.VAR_REASONS] == "stir_a"
