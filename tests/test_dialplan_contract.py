"""dialplan/*.conf and the agent agree on every route and variable (agent/contract.py)."""

from __future__ import annotations

import re
from pathlib import Path

from agent import contract
from agent.outbound.route import answer_for
from agent.outbound.service import Decision

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
    routes = set(re.findall(r"AGI\(\$\{agi\}/([A-Za-z0-9_-]+)", _text()))
    assert {contract.ROUTE_OUTBOUND, contract.ROUTE_INBOUND} <= routes
    assert routes <= contract.ROUTES, routes - contract.ROUTES


def test_the_agent_address_is_one_global_with_the_loopback_default() -> None:
    for f in sorted(DIALPLAN.glob("*.conf")):
        code = "\n".join(line.split(";", 1)[0] for line in f.read_text().splitlines())
        if "AGI(" not in code:
            continue
        assert "AGI(agi://" not in code, f"{f.name} hard-codes the agent's address"
        assert "Set(LOCAL(agi)=${TRUSTLINE_AGI_URL})" in code, f.name
        default = f'ExecIf($["${{agi}}" = ""]?Set(LOCAL(agi)={contract.DIALPLAN_DEFAULT_AGI_URL}))'
        assert default in code, f.name


def test_inbound_screens_the_filtered_caller_number_passed_as_fourth_argument() -> None:
    code = (DIALPLAN / "trustline-inbound.conf").read_text()
    agi = "AGI(${agi}/inbound?answer=one,${dialled},${attestation},${verify},"
    assert agi + "${FILTER(0-9+,${CALLERID(num)})})" in code
    # The Gosub's own arguments are unchanged: callers change nothing.
    assert "Gosub(trustline-inbound,s,1(${EXTEN},${STIR_SHAKEN(0,attestation)}," in code


def test_recordings_paths_are_globals_with_documented_defaults() -> None:
    text = (DIALPLAN / "recordings.conf").read_text()
    code = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    assert "${bin} recordings seal" in code and "--data-dir ${data}" in code
    assert "Set(LOCAL(bin)=${TRUSTLINE_BIN})" in code
    assert "Set(LOCAL(data)=${TRUSTLINE_DATA_DIR})" in code
    assert ";   TRUSTLINE_BIN=        [/usr/bin/trustline]" in text
    assert ";   TRUSTLINE_DATA_DIR=   [/var/lib/trustline]" in text


def test_the_admin_readme_includes_every_dialplan_file_and_covers_freepbx() -> None:
    readme = (DIALPLAN.parent / "asterisk-conf" / "README.md").read_text()
    for f in sorted(DIALPLAN.glob("*.conf")):
        assert f'#include "{f.name}"' in readme, f.name
    for name in ("extensions_custom.conf", "manager_custom.conf", "TRUSTLINE_AGI_URL"):
        assert name in readme, name


def test_the_spam_dialplan_mentions_no_api_the_agent_lacks() -> None:
    text = (DIALPLAN / "trustline-spam.conf").read_text()
    assert "HTTP API" not in text and "http api" not in text.lower()


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


def asterisk_filter(allowed: str, value: str) -> str:
    """Asterisk's FILTER(allowed,value) (func_strings.c): 'a-z' is a range; a '-' with
    nothing after it closes a range of one, so a trailing '-' is NOT a literal dash."""
    keep: set[str] = set()
    i = 0
    while i < len(allowed):
        first = allowed[i]
        i += 1
        if i < len(allowed) and allowed[i] == "-":
            last = allowed[i + 1] if i + 1 < len(allowed) else first
            i += 2 if i + 1 < len(allowed) else 1
            keep.update(chr(c) for c in range(ord(first), ord(last) + 1))
        else:
            keep.add(first)
    return "".join(ch for ch in value if ch in keep)


def test_the_dialplan_filters_let_every_purpose_and_case_ref_through() -> None:
    from agent.config import load_config
    from agent.settings import example_config_path

    text = (DIALPLAN / "trustline.conf").read_text()
    purpose_filter = re.search(r"FILTER\(([^,]+),\$\{ARG1\}\)", text)
    case_filter = re.search(r"FILTER\(([^,]+),\$\{ARG3\}\)", text)
    assert purpose_filter and case_filter
    purposes = [*load_config(example_config_path()).purposes, "follow-up", "second_call"]
    for purpose in purposes:
        assert asterisk_filter(purpose_filter.group(1), purpose) == purpose
    for case_ref in ("CASE-42", "2026/11:a.b_c"):
        assert asterisk_filter(case_filter.group(1), case_ref) == case_ref
    assert asterisk_filter(purpose_filter.group(1), "remind;er\n") == "reminder"
    # The trap the filters avoid: a trailing dash drops dashes.
    assert asterisk_filter("A-Za-z0-9_-", "follow-up") == "followup"


def asterisk_cut(value: str, delimiter: str, field: str) -> str:
    """Asterisk's CUT(var,delimiter,field) for one field N or an open range N-."""
    parts = value.split(delimiter)
    if field.endswith("-"):
        return delimiter.join(parts[int(field[:-1]) - 1 :])
    index = int(field) - 1
    return parts[index] if index < len(parts) else ""


def _cut_fields(conf: str) -> dict[str, str]:
    """Which field of TRUSTLINE_ANSWER each Set() of the subroutine reads: {target: field}."""
    text = (DIALPLAN / conf).read_text()
    return dict(re.findall(r"Set\(([A-Z_a-z()]+)=\$\{CUT\(TRUSTLINE_ANSWER,\|,(\d+-?)\)\}\)", text))


def test_the_subroutines_split_the_one_answer_in_the_contract_order() -> None:
    assert contract.ANSWER_SEPARATOR == "|"
    outbound = _cut_fields("trustline.conf")
    # Status, pool, reason straight into their variables; number and name via LOCALs.
    assert outbound == {
        contract.VAR_STATUS: "1",
        contract.VAR_POOL: "2",
        contract.VAR_REASON: "3",
        "LOCAL(num)": "4",
        "LOCAL(name)": "5-",
    }
    assert contract.OUTBOUND_ANSWER_FIELDS == (
        contract.VAR_STATUS,
        contract.VAR_POOL,
        contract.VAR_REASON,
        contract.CALLERID_NUM,
        contract.CALLERID_NAME,
    )
    text = (DIALPLAN / "trustline.conf").read_text()
    assert "Set(CALLERID(num)=${num})" in text and "Set(CALLERID(name)=${name})" in text
    assert "/outbound?answer=one," in text and "Set(TRUSTLINE_ANSWER=)" in text
    inbound = _cut_fields("trustline-inbound.conf")
    assert inbound == {"LOCAL(verdict)": "1", contract.VAR_SCORE: "2", contract.VAR_REASONS: "3"}
    assert contract.INBOUND_ANSWER_FIELDS == (
        contract.VAR_VERDICT,
        contract.VAR_SCORE,
        contract.VAR_REASONS,
    )
    assert "Set(TRUSTLINE_VERDICT=${verdict})" in (DIALPLAN / "trustline-inbound.conf").read_text()


def test_a_name_with_the_separator_survives_the_split() -> None:
    answer = answer_for(
        Decision(contract.STATUS_OK, "least_used", "p", "+33142000001", 'Dr "A|B", C')
    ).packed(contract.OUTBOUND_ANSWER_FIELDS)
    ((name, value),) = answer.variables
    assert name == contract.VAR_ANSWER
    assert asterisk_cut(value, "|", "1") == "ok"
    assert asterisk_cut(value, "|", "4") == "+33142000001"
    assert asterisk_cut(value, "|", "5-") == 'Dr "A|B", C'


def _context(name: str) -> str:
    text = "\n".join(f.read_text() for f in sorted(DIALPLAN.glob("*.conf")))
    start = text.index(f"[{name}]")
    end = text.find("\n[", start + 1)
    return text[start : end if end != -1 else None]


def test_a_call_a_compliance_rule_forbids_is_never_dialled() -> None:
    outbound = _context("trustline-outbound")
    for status in (
        contract.STATUS_OUTSIDE_WINDOW,
        contract.STATUS_ATTEMPTS_EXCEEDED,
        contract.STATUS_OPTED_OUT,
    ):
        assert f'GotoIf($["${{TRUSTLINE_STATUS}}" = "{status}"]?not_now)' in outbound, status
    not_now = outbound[outbound.index("n(not_now)") :]
    assert "Hangup(" in not_now and "Return(" not in not_now  # back to Dial() never happens
    # A window left on the channel by an earlier call is never read as this call's.
    assert f"Set({contract.VAR_NEXT_WINDOW}=)" in outbound


def test_the_ivr_opt_out_raises_the_event_the_agent_decodes() -> None:
    ivr = _context("trustline-optout-ivr")
    assert (
        f"UserEvent({contract.USEREVENT_OPTOUT},Number: ${{number}},Purpose: ${{purpose}})" in ivr
    )
    assert "Set(LOCAL(number)=${FILTER(0-9+,${ARG1})})" in ivr  # nothing unfiltered reaches AMI


def test_recording_plays_consent_first_and_skips_purposes_not_recorded() -> None:
    consent = _context("trustline-record-consent")
    assert consent.index("Playback(${RECORDING_CONSENT_PROMPT})") < consent.index("Return(record)")
    assert "FIELDNUM(RECORDING_SKIP_PURPOSES,|,${purpose})" in consent
    for way in ("trustline-record", "trustline-record-hook"):
        body = _context(way)
        assert body.index("Gosub(trustline-record-consent") < body.index("MixMonitor(")
        assert '"${GOSUB_RETVAL}" = "skip"]?done' in body
