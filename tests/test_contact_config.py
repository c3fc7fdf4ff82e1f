"""The [contact] section: SMS templates carry only {centre} {number} {date} {time}; provider
settings are complete; pools and purposes named exist; CNAM names are plain ASCII (with a
suggestion) and 15 characters."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.contact import cnam
from agent.contact.config import ContactConfig, problems
from agent.contact.templates import render


def errors(data: dict[str, object]) -> list[tuple[tuple[object, ...], str]]:
    with pytest.raises(ValidationError) as info:
        ContactConfig.model_validate(data)
    return [(tuple(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in info.value.errors()]


def test_templates_take_only_the_four_placeholders() -> None:
    ok = ContactConfig.model_validate(
        {
            "centre": "Clinique StMarc",
            "templates": {"reminder": "{centre}: {date} {time}, {number} {{ok}}"},
        }
    )
    text = render(ok.templates["reminder"], centre="C", number="01", date="17/11", time="10h00")
    assert text == "C: 17/11 10h00, 01 {ok}"
    for bad, shown in [
        ("Résultats de {case_ref}", "{case_ref}"),
        ("{centre.__class__}", "{centre.__class__}"),
        ("{number!r}", "{number!r}"),
        ("{date:%Y}", "{date:%Y}"),
        ("{0}", "{0}"),
    ]:
        [(loc, message)] = errors({"templates": {"reminder": bad}})
        assert loc == ("templates", "reminder")
        assert message.startswith(f"placeholder {shown} is not allowed: an SMS carries no medical")
    [(_, message)] = errors({"templates": {"reminder": "unclosed {centre"}})
    assert "not well formed" in message


def test_provider_sections_must_be_complete() -> None:
    [(loc, message)] = errors({"sms": {"provider": "twilio", "sender": "+33142000001"}})
    assert message == "provider = 'twilio' needs a [contact.sms.twilio]"
    [(loc, message)] = errors(
        {"sms": {"provider": "http", "sender": "X", "http": {"url": "https://gw.example/send"}}}
    )
    assert message == "auth = 'bearer' needs auth_file (the secret is read from it)"
    [(loc, message)] = errors(
        {
            "sms": {
                "provider": "http",
                "sender": "X",
                "http": {
                    "url": "https://gw",
                    "auth": "none",
                    "body": '{"to": "${to}", "x": "${case}"}',
                },
            }
        }
    )
    assert loc == ("sms", "http", "body")
    assert message.startswith("body placeholder ${case} is unknown")


def test_cross_checks_name_missing_pools_and_purposes() -> None:
    contact = ContactConfig.model_validate(
        {
            "templates": {"survey": "{centre}"},
            "pools": {"nope": {"pin_hours": 2}, "reminders": {"inbound": ["01 42 00 00 00", "12"]}},
        }
    )
    found = problems(contact, ["reminders"], ["reminder"], "FR")
    assert (("pools", "nope"), "no pool 'nope' in [pools]") in found
    assert (("templates", "survey"), "no pool serves purpose 'survey'") in found
    assert (("centre",), "SMS templates need the centre's name (centre = ...)") in found
    assert [loc for loc, _ in found if loc[:3] == ("pools", "reminders", "inbound")] == [
        ("pools", "reminders", "inbound", 1)
    ]
    assert contact.pin_hours_for("nope") == 2 and contact.pin_hours_for("reminders") == 24
    assert contact.lead_minutes_for("reminders") == 20


def test_cnam_names_are_plain_ascii_with_a_suggestion() -> None:
    assert cnam.cnam_problem("Clinique StMarc") is None
    assert cnam.cnam_problem("Clinique Hélène") == (
        "caller name 'Clinique Hélène' has characters carrier databases mangle (è é); "
        "CNAM is plain ASCII: use 'Clinique Helene'"
    )
    assert cnam.ascii_suggestion("Cœur Sœurs  Côte") == "Coeur Soeurs Co"
    assert cnam.cnam_problem("Centre Hospitalier") == (
        "caller name is 18 characters; CNAM allows at most 15"
    )


def test_cnam_status_and_the_seven_day_rule() -> None:
    day = 86400.0
    wanted = cnam.CnamState("+33142000001", "Clinique StMarc", "Clinique StMarc", 0.0)
    assert cnam.status(wanted, 10 * 3600).state == "pending"
    assert cnam.status(wanted, 73 * 3600).state == "ok"
    old = cnam.CnamState("+33142000001", "StMarc", "Clinique StMarc", 0.0)
    mismatch = cnam.status(old, 2 * day)
    assert mismatch.state == "mismatch" and "allowed in 5.0 days" in mismatch.detail
    assert cnam.status(old, 8 * day).detail == "a change is allowed now"
    assert cnam.change_refused(0.0, 3 * day, name_changed=True) is not None
    assert cnam.change_refused(0.0, 3 * day, name_changed=False) is None
    assert cnam.change_refused(0.0, 7 * day, name_changed=True) is None
