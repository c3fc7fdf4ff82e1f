"""The AMI side of the contract: the dialplan, AstDB, the captured traffic and the agent's
decoding all use the names in agent/contract.py, and nothing else.

(tests/test_dialplan_contract.py covers the FastAGI side: routes and channel variables.)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from agent import contract
from agent.ami.protocol import parse_message
from agent.clock import FrozenClock
from agent.compliance.config import ComplianceConfig
from agent.compliance.service import ComplianceService
from agent.outcomes.calls import CallTracker, NotDialled, ScreeningOutcome, SpamReported
from agent.store import open_database
from tests.ami_replay import EVENT_CAPTURES, events

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "fixtures" / "asterisk-captures"


def _code(path: Path) -> str:
    """A .conf file without its comments."""
    return "\n".join(line.split(";", 1)[0] for line in path.read_text().splitlines())


def _raised(code: str) -> list[tuple[str, dict[str, str]]]:
    """Every UserEvent(Name,Field: value,...) application call: (name, fields)."""
    found = []
    for args in re.findall(r"UserEvent\(([^\n]*)\)\s*$", code, re.MULTILINE):
        name, *pairs = args.split(",")
        fields = dict(p.split(": ", 1) for p in pairs)
        found.append((name, fields))
    return found


def _captured() -> list[dict[str, str]]:
    return [parse_message(e.rstrip(b"\r\n")) for name in EVENT_CAPTURES for e in events(name)]


def test_every_userevent_the_dialplan_raises_is_in_the_contract() -> None:
    raised = [
        r for conf in sorted((ROOT / "dialplan").glob("*.conf")) for r in _raised(_code(conf))
    ]
    names = {name for name, _ in raised}
    assert names == set(contract.USEREVENTS)  # each one raised somewhere, none unknown
    for name, fields in raised:
        assert set(fields) <= set(contract.USEREVENTS[name]), (name, fields)
    spam = [f for n, f in raised if n == contract.USEREVENT_SPAM]
    assert {f[contract.SPAM_FIELD_SOURCE] for f in spam} == set(contract.SPAM_SOURCES)
    screening = [f for n, f in raised if n == contract.USEREVENT_SCREENING]
    verdicts = {f[contract.SCREENING_FIELD_VERDICT] for f in screening}
    assert verdicts == set(contract.VERDICTS)
    outcomes = set()
    for f in screening:
        outcome = f[contract.SCREENING_FIELD_OUTCOME]
        # ${IF($["${score}" = "none"]?unscreened:allowed)}: both branches are outcomes.
        outcomes |= set(re.findall(r"\?(\w+):(\w+)\)", outcome)[0]) if "?" in outcome else {outcome}
    assert outcomes == set(contract.SCREENING_OUTCOMES)
    # The statuses the outbound subroutine sends to its "not dialled" branch.
    code = _code(ROOT / "dialplan" / "trustline.conf")
    not_now = re.findall(r'TRUSTLINE_STATUS\}" = "(\w+)"\]\?not_now', code)
    assert set(not_now) == set(contract.NOT_DIALLED_STATUSES)


# Field values a dialplan would send, for each field of the contract.
_VALUES = {
    contract.SPAM_FIELD_NUMBER: "+33142000002",
    contract.SPAM_FIELD_SOURCE: "agent",
    contract.SCREENING_FIELD_VERDICT: contract.VERDICT_CHALLENGE,
    contract.SCREENING_FIELD_OUTCOME: "passed",
    contract.SCREENING_FIELD_SCORE: "55",
    contract.SCREENING_FIELD_TRIES: "2",
    contract.OPTOUT_FIELD_PURPOSE: "survey",
    contract.NOT_DIALLED_FIELD_STATUS: contract.STATUS_OUTSIDE_WINDOW,
    contract.NOT_DIALLED_FIELD_REASON: "outside_window",
    contract.NOT_DIALLED_FIELD_NEXT_WINDOW: "2026-11-18T08:00:00+01:00",
}


def _userevent(name: str) -> dict[str, str]:
    """The captured SpamReport UserEvent, renamed, with ``name``'s contract fields."""
    spam = next(e for e in _captured() if e.get("Event") == "UserEvent")
    event = {k: v for k, v in spam.items() if k not in contract.USEREVENTS[spam["UserEvent"]]}
    event["UserEvent"] = name
    event.update({f: _VALUES[f] for f in contract.USEREVENTS[name]})
    return event


async def test_every_userevent_in_the_contract_is_decoded(tmp_path: Path) -> None:
    tracker = CallTracker()
    uniqueid = _userevent(contract.USEREVENT_SPAM)["Uniqueid"]
    # Decoded by the AMI link's tracker into facts the outcomes intake acts on...
    assert tracker.feed(_userevent(contract.USEREVENT_SPAM), 1.0) == [
        SpamReported("+33142000002", "agent", uniqueid)
    ]
    assert tracker.feed(_userevent(contract.USEREVENT_SCREENING), 1.0) == [
        ScreeningOutcome(contract.VERDICT_CHALLENGE, "passed", 55, 2)
    ]
    assert tracker.feed(_userevent(contract.USEREVENT_NOT_DIALLED), 1.0) == [
        NotDialled(contract.STATUS_OUTSIDE_WINDOW)
    ]
    # ...or handed whole to the feature app.py registers for it (compliance: OptOut).
    db = await open_database(tmp_path / "store.sqlite3")
    clock = FrozenClock(datetime(2026, 11, 17, 10, tzinfo=UTC))
    compliance = ComplianceService(
        db, clock, b"k" * 32, ComplianceConfig(), region="FR", timezone="Europe/Paris"
    )
    assert await compliance.on_user_event(_userevent(contract.USEREVENT_OPTOUT))
    await db.close()
    # Anything else, or a field out of the vocabulary, is not taken at its word.
    assert tracker.feed(_userevent(contract.USEREVENT_OPTOUT), 1.0) == []
    assert tracker.feed({**_userevent(contract.USEREVENT_SPAM), "UserEvent": "SpamX"}, 1.0) == []
    odd = {"Event": "UserEvent", "UserEvent": contract.USEREVENT_SCREENING, "Verdict": "maybe"}
    assert tracker.feed(odd, 1.0) == [ScreeningOutcome("other", "other", None, None)]
    odd = {"Event": "UserEvent", "UserEvent": contract.USEREVENT_NOT_DIALLED, "Status": "x"}
    assert tracker.feed(odd, 1.0) == [NotDialled("other")]


def test_captured_traffic_uses_the_contract_names() -> None:
    captured = _captured()
    userevents = [e for e in captured if e.get("Event") == "UserEvent"]
    assert userevents and all(e["UserEvent"] in contract.USEREVENTS for e in userevents)
    for e in userevents:
        assert set(contract.USEREVENTS[e["UserEvent"]]) <= set(e), e["UserEvent"]
    variables = {e.get("Variable") for e in captured if e.get("Event") == "VarSet"}
    assert contract.VAR_MIXMONITOR_FILENAME in variables
    assert variables & contract.OURS_VARIABLES
    # The dialplan that produced the captures raised the same event with the same fields.
    used = _raised(_code(CAPTURES / "extensions-used.conf"))
    assert [n for n, _ in used] == [contract.USEREVENT_SPAM]
    assert set(used[0][1]) == set(contract.USEREVENTS[contract.USEREVENT_SPAM])


def test_astdb_family_is_the_one_the_dialplan_reads() -> None:
    code = _code(ROOT / "dialplan" / "trustline.conf")
    families = set(re.findall(r"\$\{DB\(([\w/]+)/\$\{purpose\}\)\}", code))
    assert families == {contract.ASTDB_FALLBACK_FAMILY}


def test_manager_filters_name_every_contract_event_and_variable() -> None:
    text = (ROOT / "asterisk-conf" / "manager.conf").read_text()
    filters = " ".join(re.findall(r"^eventfilter = (.*)$", text, re.MULTILINE))
    for name in (*contract.USEREVENTS, *contract.OURS_VARIABLES, contract.VAR_MIXMONITOR_FILENAME):
        assert name in filters, name


# Spellings left in modules others are reworking now (issue 9): they must import the name.
_SPELLED_ELSEWHERE = {("agent/compliance/service.py", contract.USEREVENT_OPTOUT)}


def test_the_agent_spells_no_contract_name_outside_contract_py() -> None:
    names = [
        *contract.USEREVENTS,
        contract.VAR_MIXMONITOR_FILENAME,
        contract.ASTDB_FALLBACK_FAMILY,
        contract.ASTDB_FALLBACK_INDEX_KEY,
    ]
    for path in sorted((ROOT / "agent").rglob("*.py")):
        if path.name == "contract.py":
            continue
        code = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        where = path.relative_to(ROOT).as_posix()
        for name in names:
            if (where, name) not in _SPELLED_ELSEWHERE:
                assert f'"{name}"' not in code, (where, name)
