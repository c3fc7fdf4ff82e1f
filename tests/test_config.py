"""pools.toml validation: every problem named with its location, nothing half-loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config, parse_config
from agent.errors import ConfigError
from agent.settings import example_config_path

GOOD = """
[defaults]
timezone = "Europe/Paris"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "01 42 00 00 02", name = "Clinique StMarc", daily_cap = 60 },
]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.problems


def test_the_shipped_example_is_valid() -> None:
    config = load_config(example_config_path())
    assert config.pool_for("reminder") is not None
    assert config.reserve_pools


def test_national_numbers_are_stored_as_e164_with_pool_defaults() -> None:
    config = parse_config(GOOD)
    pool = config.pools["reminders"]
    assert [n.number for n in pool.numbers] == ["+33142000001", "+33142000002"]
    assert [n.daily_cap for n in pool.numbers] == [80, 60]
    assert pool.fallback == "+33142000001"  # first number when no fallback is named
    assert pool.rules.intensive_threshold == 60 and pool.rules.rest_hours == 48
    assert pool.rules.reports_to_quarantine == 2 and pool.rules.on_exhausted == "fallback"


@pytest.mark.parametrize(
    "change,expected",
    [
        (("timezone =", "timezon ="), "line 3: defaults.timezon: unknown key"),
        (
            ('"+33142000001"', '"+3314200"'),
            "line 9: pools.reminders.numbers[0].number: '+3314200' is not a valid number",
        ),
        (
            ("daily_cap = 60", "daily_cap = 0"),
            "line 10: pools.reminders.numbers[1].daily_cap: Input should be greater than 0",
        ),
        (
            ('name = "Clinique StMarc", daily', 'name = "Clinique Saint-Marc", daily'),
            "line 10: pools.reminders.numbers[1].name: caller name is 19 characters; CNAM allows at most 15",
        ),
        (
            ('name = "Clinique StMarc" }', 'name = "Clinique\\u0007" }'),
            "line 9: pools.reminders.numbers[0].name: caller name must not contain control characters",
        ),
        (
            ('"Europe/Paris"', '"Europe/Lutece"'),
            "line 3: defaults.timezone: unknown time zone 'Europe/Lutece'",
        ),
        (('region = "FR"', 'region = "XX"'), "line 4: defaults.region: unknown region 'XX'"),
        (
            ('"01 42 00 00 02"', '"+33142000001"'),
            "line 10: pools.reminders.numbers[1].number: +33142000001 is already listed at pools.reminders.numbers[0].number",
        ),
        (("[pools.reminders]", "[pools.reminders\n"), "TOML syntax: "),
        (
            ('purposes = ["reminder"]', 'purposes = ["reminder"]\non_exhausted = "panic"'),
            "line 8: pools.reminders.on_exhausted: Input should be 'fallback', 'borrow_reserve' or 'refuse'",
        ),
    ],
)
def test_each_problem_names_its_location(change, expected) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_listed_not_just_the_first() -> None:
    text = GOOD.replace('"+33142000001"', '"12"').replace('"01 42 00 00 02"', '"34"')
    found = problems(text)
    assert len(found) == 2
    assert "numbers[0]" in found[0] and "numbers[1]" in found[1]


def test_duplicate_numbers_across_pools_and_purposes() -> None:
    text = (
        GOOD
        + """
[pools.results]
purposes = ["reminder"]
numbers = [ { number = "0142000001", name = "Resultats" } ]
"""
    )
    found = problems(text)
    assert any(
        "pools.results.numbers[0].number: +33142000001 is already listed at pools.reminders" in p
        for p in found
    )
    assert any("purpose 'reminder' is already served by pool 'reminders'" in p for p in found)


def test_check_config_cli_lists_problems_and_exits_non_zero(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "pools.toml"
    bad.write_text(
        GOOD.replace("timezone =", "timezon =").replace("daily_cap = 60", "daily_cap = -1")
    )
    assert main(["check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "defaults.timezon: unknown key" in err
    assert "pools.reminders.numbers[1].daily_cap" in err
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    assert main(["check-config", str(good)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_console_script_on_a_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 78
    assert "cannot read" in proc.stderr
