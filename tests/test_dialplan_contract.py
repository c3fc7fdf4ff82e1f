"""dialplan/*.conf and the agent agree on every route and variable (agent/contract.py)."""

from __future__ import annotations

import re
from pathlib import Path

from agent import contract
from agent.agi.outbound import answer_for
from agent.services.outbound import Decision

DIALPLAN = Path(__file__).resolve().parents[1] / "dialplan"


def _text() -> str:
    files = sorted(DIALPLAN.glob("*.conf"))
    assert files, "dialplan/ holds the subroutines admins include"
    return "\n".join(line.split(";", 1)[0] for f in files for line in f.read_text().splitlines())


def test_dialplan_reads_only_variables_the_agent_sets_or_it_owns() -> None:
    text = _text()
    read = set(re.findall(r"\$\{(TRUSTLINE_[A-Z_]+)\}", text))
    written = set(re.findall(r"Set\((TRUSTLINE_[A-Z_]+)=", text))
    allowed = contract.AGENT_SET_VARIABLES | contract.DIALPLAN_OWNED
    assert read, "the subroutines read the agent's answer"
    assert read <= allowed, read - allowed
    assert written <= allowed, written - allowed


def test_dialplan_calls_only_routes_the_agent_serves() -> None:
    routes = set(re.findall(r"AGI\(agi://[^/,)]+/([A-Za-z0-9_-]+)", _text()))
    assert contract.ROUTE_OUTBOUND in routes
    assert routes <= contract.ROUTES, routes - contract.ROUTES


def test_outbound_subroutine_reads_every_status_variable_the_agent_sets() -> None:
    text = (DIALPLAN / "trustline.conf").read_text()
    for name in (contract.VAR_STATUS, contract.VAR_POOL, contract.VAR_REASON):
        assert "${" + name + "}" in text
    assert '"refused"' in text  # the one status that blocks a call
    assert "${DB(trustline/fallback/${purpose})}" in text
    assert f"${{{contract.DIALPLAN_GLOBAL_FALLBACK_CID}}}" in text


def test_the_agent_sets_exactly_the_contract_names() -> None:
    answer = answer_for(Decision(contract.STATUS_OK, "least_used", "p", "+33142000001", "Clinic"))
    assert tuple(name for name, _ in answer.variables) == contract.OUTBOUND_SETS
