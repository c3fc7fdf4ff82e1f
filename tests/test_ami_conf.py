"""asterisk-conf/manager.conf and dialplan/trustline-spam.conf agree with what the agent reads.

The event filters are applied (as Asterisk does: POSIX extended regex searched in the whole
event text) to every captured event: what they let through must give exactly the same
outcomes, recordings and reports as the unfiltered stream, and cut most of the volume.
"""

from __future__ import annotations

import re
from ipaddress import IPv6Address, ip_address, ip_network
from pathlib import Path

from agent.ami.link import LOGIN_EVENTS
from agent.ami.protocol import parse_message
from agent.contract import OURS_VARIABLES, USEREVENT_SCREENING, USEREVENT_SPAM, USEREVENTS
from agent.contract import VAR_MIXMONITOR_FILENAME as RECORDING_VARIABLE
from agent.outcomes.calls import CallTracker, clean_source
from tests.ami_replay import EVENT_CAPTURES, events

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = EVENT_CAPTURES


def manager_user() -> dict[str, list[str]]:
    section: dict[str, list[str]] = {}
    inside = False
    for raw in (ROOT / "asterisk-conf" / "manager.conf").read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            inside = line == "[trustline]"
        elif inside and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            section.setdefault(key, []).append(value)
    return section


def filters() -> list[re.Pattern[bytes]]:
    # POSIX [[:space:]] is \s; without REG_NEWLINE, "." matches line breaks too (DOTALL).
    return [
        re.compile(f.replace("[[:space:]]", r"\s").encode(), re.DOTALL)
        for f in manager_user()["eventfilter"]
    ]


def effects(stream: list[bytes]) -> list[object]:
    tracker = CallTracker()
    out: list[object] = []
    for raw in stream:
        out.extend(tracker.feed(parse_message(raw.rstrip(b"\r\n")), 1.0))
    return out


def test_manager_user_is_least_privilege_on_loopback() -> None:
    user = manager_user()
    assert set(user["read"][0].split(",")) == set(LOGIN_EVENTS.split(","))
    assert user["write"] == ["system"]  # DBPut/DBDel/DBGet, CoreShowChannels; nothing else
    assert user["deny"] == ["0.0.0.0/0.0.0.0", "::/0"]
    assert user["permit"] == ["127.0.0.1/255.255.255.255", "::1/128"]


def test_event_filters_keep_every_effect_and_cut_the_volume() -> None:
    patterns = filters()
    everything = [e for name in CAPTURES for e in events(name)]
    kept = [e for e in everything if any(p.search(e) for p in patterns)]
    assert effects(kept) == effects(everything)
    assert len(effects(everything)) >= 12  # outcomes, CDRs, recordings, one report
    assert len(kept) * 5 < len(everything)
    names = {parse_message(e.rstrip(b"\r\n"))["Event"] for e in kept}
    assert names == {"DialEnd", "Hangup", "Cdr", "VarSet", "UserEvent"}
    assert not [e for e in kept if e.startswith(b"Event: HangupRequest")]


def test_event_filters_pass_every_variable_the_agent_reads() -> None:
    # The captures only show TRUSTLINE_POOL; TRUSTLINE_STATUS must pass as well.
    template = next(e for e in events("ami-answered") if b"Variable: TRUSTLINE_POOL" in e)
    for name in (*OURS_VARIABLES, RECORDING_VARIABLE):
        event = template.replace(b"TRUSTLINE_POOL", name.encode())
        assert any(p.search(event) for p in filters()), name
    other = template.replace(b"TRUSTLINE_POOL", b"TRUSTLINE_POOLSIDE")
    assert not any(p.search(other) for p in filters())


def test_event_filters_pass_every_userevent_the_dialplan_raises() -> None:
    spam = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    assert {USEREVENT_SPAM, USEREVENT_SCREENING} < set(USEREVENTS)
    for name in USEREVENTS:
        event = spam.replace(b"UserEvent: SpamReport", f"UserEvent: {name}".encode())
        assert any(p.search(event) for p in filters()), name
    other = spam.replace(b"UserEvent: SpamReport", b"UserEvent: SpamReportX")
    assert not any(p.search(other) for p in filters())


def test_spam_dialplan_raises_the_event_the_agent_reads() -> None:
    text = (ROOT / "dialplan" / "trustline-spam.conf").read_text()
    code = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    raised = re.findall(r"UserEvent\((\w+),Number: \$\{number\},Source: (\w+)\)", code)
    assert raised == [(USEREVENT_SPAM, "ivr"), (USEREVENT_SPAM, "agent")]
    assert all(clean_source(source) == source for _, source in raised)
    # The number is filtered to digits and "+" before it becomes a UserEvent header.
    assert code.count("Set(LOCAL(number)=${FILTER(0-9+,") == 2
    # Same shape as the UserEvent the real PBX raised in the capture.
    captured = next(e for e in events("ami-userevent") if b"UserEvent: SpamReport" in e)
    assert b"\r\nNumber: " in captured and b"\r\nSource: ivr\r\n" in captured


def _asterisk_apply_ha(rules: list[tuple[str, str]], client: str) -> str:
    """Asterisk's ast_apply_ha (main/acl.c) on (sense, network) rules: the address family
    test reads the list's *first* rule (``ha->addr``) for every rule; an IPv4-mapped client is
    checked as IPv4; a rule of the other family never matches."""
    head_is_v4 = ip_network(rules[0][1], strict=False).version == 4
    address = ip_address(client)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    verdict = "permit"
    for sense, network in rules:
        if head_is_v4 != (address.version == 4):
            continue  # "An IPv4 ACL does not apply to an IPv6 address" (and the reverse)
        net = ip_network(network, strict=False)
        if net.version == address.version and address in net:
            verdict = sense
    return verdict


def test_manager_conf_says_its_ipv6_rules_protect_nothing_on_a_dual_stack_bind() -> None:
    text = (ROOT / "asterisk-conf" / "manager.conf").read_text()
    rules = []
    for raw in text.split("[trustline]", 1)[1].splitlines():
        key, _, value = raw.split(";", 1)[0].partition("=")
        if key.strip() in ("deny", "permit"):
            rules.append((key.strip(), value.strip()))
    assert _asterisk_apply_ha(rules, "127.0.0.1") == "permit"
    assert _asterisk_apply_ha(rules, "192.0.2.7") == "deny"
    assert _asterisk_apply_ha(rules, "::ffff:192.0.2.7") == "deny"
    # The hole: with bindaddr = ::, any native IPv6 client passes these rules.
    assert _asterisk_apply_ha(rules, "2001:db8::7") == "permit"
    # So the file must keep the bind on IPv4 loopback and say why.
    comments = " ".join(
        line.lstrip("; ").strip() for line in text.splitlines() if line.startswith(";")
    )
    assert "bindaddr = 127.0.0.1" in comments
    assert "do not protect anything if bindaddr is '::'" in comments
    assert "first rule" in comments
