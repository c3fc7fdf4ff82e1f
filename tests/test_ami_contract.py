"""The AMI side of the contract: the dialplan, AstDB, the captured traffic and the agent's
decoding all use the names in agent/contract.py, and nothing else.

(tests/test_dialplan_contract.py covers the FastAGI side: routes and channel variables.)
"""

from __future__ import annotations

import re
from pathlib import Path

from agent import contract
from agent.ami.protocol import parse_message
from agent.outcomes.calls import CallTracker, ScreeningOutcome, SpamReported
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


def test_every_userevent_in_the_contract_is_decoded() -> None:
    spam = next(e for e in _captured() if e.get("Event") == "UserEvent")
    tracker = CallTracker()
    for name, fields in contract.USEREVENTS.items():
        event = {k: v for k, v in spam.items() if k not in contract.USEREVENTS[spam["UserEvent"]]}
        event["UserEvent"] = name
        values = {
            contract.SPAM_FIELD_NUMBER: "+33142000002",
            contract.SPAM_FIELD_SOURCE: "agent",
            contract.SCREENING_FIELD_VERDICT: contract.VERDICT_CHALLENGE,
            contract.SCREENING_FIELD_OUTCOME: "passed",
            contract.SCREENING_FIELD_SCORE: "55",
            contract.SCREENING_FIELD_TRIES: "2",
        }
        event.update({f: values[f] for f in fields})
        (fact,) = tracker.feed(event, 1.0)
        if name == contract.USEREVENT_SPAM:
            assert fact == SpamReported("+33142000002", "agent", spam["Uniqueid"])
        else:
            assert fact == ScreeningOutcome(contract.VERDICT_CHALLENGE, "passed", 55, 2)
    # Anything else, or a field out of the vocabulary, is not taken at its word.
    assert tracker.feed({**spam, "UserEvent": "SpamReportX"}, 1.0) == []
    odd = {"Event": "UserEvent", "UserEvent": contract.USEREVENT_SCREENING, "Verdict": "maybe"}
    assert tracker.feed(odd, 1.0) == [ScreeningOutcome("other", "other", None, None)]


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
        for name in names:
            assert f'"{name}"' not in code, (path, name)
