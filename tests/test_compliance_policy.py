"""Compliance rules without I/O: window texts, the callee's time zone, holidays, limits."""

from __future__ import annotations

import random
from datetime import datetime
from zoneinfo import ZoneInfo

import phonenumbers
import pytest

from agent.compliance import numbers, policy, zones
from agent.compliance.config import parse_compliance
from agent.compliance.policy import Limit, PurposeRules, WindowError, parse_window
from agent.errors import ConfigError

REUNION = ZoneInfo("Indian/Reunion")
PARIS = ZoneInfo("Europe/Paris")
WORKDAY = PurposeRules(window=parse_window("Mon-Fri 09:00-19:00"))


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


def reunion_zone(text: str) -> str:
    return policy.callee_zone(numbers.to_e164(text, "FR"), "Europe/Paris")


def test_a_reunion_callee_is_refused_at_0830_and_accepted_at_0930_in_reunion_time() -> None:
    zone = reunion_zone("0692 12 34 56")
    assert zone == "Indian/Reunion"
    # Tuesday 17 November 2026, 08:30 in La Réunion (05:30 in Paris).
    early = policy.decide(
        WORKDAY, now=at(REUNION, 2026, 11, 17, 8, 30), zone=zone, opted_out=False, attempts=0
    )
    assert early.status == "outside_window"
    assert early.reason == "window"
    assert early.next_window == "2026-11-17T09:00:00+04:00"
    later = policy.decide(
        WORKDAY, now=at(REUNION, 2026, 11, 17, 9, 30), zone=zone, opted_out=False, attempts=0
    )
    assert later.allowed


def test_after_friday_evening_the_next_window_is_monday_morning() -> None:
    v = policy.decide(
        PurposeRules(window=parse_window("Mon-Fri 09:00-19:00; Sat 09:00-12:00")),
        now=at(PARIS, 2026, 11, 21, 12, 0),  # Saturday noon: the Saturday window just ended
        zone="Europe/Paris",
        opted_out=False,
        attempts=0,
    )
    assert v.next_window == "2026-11-23T09:00:00+01:00"


def test_14_july_is_refused_with_a_french_calendar_and_allowed_without() -> None:
    now = at(PARIS, 2026, 7, 14, 10, 0)  # a Tuesday
    with_fr = PurposeRules(window=parse_window("Mon-Sun 09:00-19:00"), calendar="FR")
    v = policy.decide(with_fr, now=now, zone="Europe/Paris", opted_out=False, attempts=0)
    assert (v.status, v.reason) == ("outside_window", "holiday")
    assert v.next_window == "2026-07-15T09:00:00+02:00"
    assert "Fête nationale" in v.detail or "National Day" in v.detail
    without = PurposeRules(window=parse_window("Mon-Sun 09:00-19:00"))
    assert policy.decide(without, now=now, zone="Europe/Paris", opted_out=False, attempts=0).allowed


def test_reunion_keeps_its_own_holiday() -> None:
    # 20 December (abolition of slavery) is a holiday in La Réunion, not in Paris.
    now = at(REUNION, 2027, 12, 20, 10, 0)  # a Monday
    rules = PurposeRules(window=parse_window("Mon-Fri 09:00-19:00"), calendar="FR-974")
    v = policy.decide(rules, now=now, zone="Indian/Reunion", opted_out=False, attempts=0)
    assert v.reason == "holiday"
    metro = PurposeRules(window=parse_window("Mon-Fri 09:00-19:00"), calendar="FR")
    assert policy.decide(metro, now=now, zone="Indian/Reunion", opted_out=False, attempts=0).allowed


@pytest.mark.parametrize(
    "number,zone",
    [
        ("0692123456", "Indian/Reunion"),  # Réunion mobile dialled from France
        ("+262692123456", "Indian/Reunion"),  # phonenumbers names Mayotte and Réunion
        ("0262161234", "Indian/Reunion"),
        ("0639012345", "Indian/Mayotte"),
        ("+262269601234", "Indian/Mayotte"),  # (phonenumbers reads 0269... as +33 2 69)
        ("0690001234", "America/Guadeloupe"),
        ("0696201234", "America/Martinique"),
        ("0694201234", "America/Cayenne"),
        ("+508551234", "America/Miquelon"),
        ("+687751234", "Pacific/Noumea"),
        ("+68987123456", "Pacific/Tahiti"),  # three zones in French Polynesia: Tahiti's
        ("+681821234", "Pacific/Wallis"),
        ("0612345678", "Europe/Paris"),
        ("+18005550123", "America/New_York"),  # a toll-free number: the region's main zone
        ("123", "Europe/Paris"),  # an extension: the fallback zone
    ],
)
def test_the_callee_time_zone_comes_from_the_number(number: str, zone: str) -> None:
    try:
        e164 = numbers.to_e164(number, "FR")
    except Exception:
        e164 = number
    assert policy.callee_zone(e164, "Europe/Paris") == zone


def test_a_limit_refuses_once_reached_and_an_opt_out_refuses_first() -> None:
    rules = PurposeRules(limit=Limit(3, 7))
    ok = policy.decide(rules, now=0.0, zone="Europe/Paris", opted_out=False, attempts=2)
    assert ok.allowed
    over = policy.decide(rules, now=0.0, zone="Europe/Paris", opted_out=False, attempts=3)
    assert (over.status, over.reason) == ("attempts_exceeded", "attempt_limit")
    out = policy.decide(rules, now=0.0, zone="Europe/Paris", opted_out=True, attempts=9)
    assert out.status == "opted_out"


def test_day_ranges_lists_and_wrap_around() -> None:
    w = parse_window("Mon-Sun 08:00-20:00")
    assert all(day == ((480, 1200),) for day in w.days)
    w = parse_window("Fri-Mon 10:00-12:00 14:00-24:00; Wed 09:00-10:00")
    assert [bool(d) for d in w.days] == [True, False, True, False, True, True, True]
    assert w.days[0] == ((600, 720), (840, 1440))


@pytest.mark.parametrize(
    "text,message",
    [
        ("Mon-Fri 09:00-19:00; Sta 09:00-12:00", "unknown day 'Sta'"),
        ("Mon-Fri 9:00-19:00", "bad time '9:00'"),
        ("Mon-Fri 09:00-25:00", "bad time '25:00'"),
        ("Mon-Fri 19:00-09:00", "hours '19:00-09:00' in 'Mon-Fri 19:00-09:00' end before"),
        ("Mon-Fri", "'Mon-Fri' needs days and hours"),
        ("Mon-Fri 09:00", "bad hours '09:00'"),
        ("Mon-Fri 09:00-19:00;", "empty clause"),
        ("", "empty window"),
    ],
)
def test_a_malformed_window_names_the_bad_token(text: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        parse_window(text)


def test_check_config_errors_name_the_line_and_key_of_a_bad_window() -> None:
    text = """
[defaults]
region = "FR"

[pools.surveys]
purposes = ["survey"]
numbers = [ { number = "+33142000001", name = "Clinique" } ]

[windows]
default = "Mon-Fri 09:00-19:00"
survey = "Mon-Fri 09:00-19:00; Sta 09:00-12:00"
results = { hours = "Mon-Sun 08:00-20:00", holidays = "XX" }

[limits]
survey = { attempts = "3", days = 7 }
"""
    with pytest.raises(ConfigError) as caught:
        parse_compliance(text)
    assert caught.value.problems == [
        "line 11: windows.survey.hours: unknown day 'Sta' in 'Sta 09:00-12:00'"
        " (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)",
        "line 12: windows.results.holidays: unknown holiday calendar 'XX' (e.g. 'FR', 'FR-974')",
        "line 15: limits.survey.attempts: Input should be a valid integer",
    ]


def test_purposes_without_a_window_use_the_default_and_its_calendar() -> None:
    loaded = parse_compliance(
        """
[windows]
default = "Mon-Fri 09:00-19:00"
holidays = "FR"
reminder = "Mon-Sat 08:00-20:00"
[limits]
default = { attempts = 5, days = 30 }
survey = { attempts = 3, days = 7 }
"""
    )
    c = loaded.compliance
    assert c.rules_for("survey").calendar == "FR"
    assert c.rules_for("survey").window == parse_window("Mon-Fri 09:00-19:00")
    assert c.rules_for("reminder").calendar is None  # its own window names no calendar
    assert c.rules_for("survey").limit == Limit(3, 7)
    assert c.rules_for("results").limit == Limit(5, 30)
    assert parse_compliance("").compliance.rules_for("survey").unrestricted


def test_the_quick_zone_reading_gives_phonenumbers_answer_for_every_country() -> None:
    # zones.zone_of skips phonenumbers' walk through the number types where the type cannot
    # change the zone: valid and invalid numbers of every calling code must read the same.
    rng = random.Random(7)
    samples: list[phonenumbers.PhoneNumber] = []
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            for kind in range(11):  # every PhoneNumberType with examples, and numbers near them
                example = phonenumbers.example_number_for_type(region, kind)
                if example is not None:
                    base = example.national_number or 0
                    near = (base + rng.randrange(-9999, 9999) for _ in range(8))
                    samples += [example, *(phonenumbers.PhoneNumber(code, n) for n in near)]
        for _ in range(20):
            national = rng.randrange(10 ** rng.randrange(4, 13))
            samples.append(phonenumbers.PhoneNumber(country_code=code, national_number=national))
    for _ in range(3000):  # French national numbers: patients, landlines, overseas, invalid
        samples.append(phonenumbers.parse(f"0{rng.randrange(10**8, 10**9)}", "FR"))
    differing = [n for n in samples if zones.zone_of(n) != policy.zone_of(n)]
    assert differing == []
    assert {zones.zone_of(n) for n in samples if n.country_code == 33} >= {"Europe/Paris", None}
