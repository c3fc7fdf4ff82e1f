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
        (("timezone =", "timezon ="), "pools.toml:3: defaults.timezon: unknown key"),
        (
            ('"+33142000001"', '"+3314200"'),
            "pools.toml:9: pools.reminders.numbers[0].number: '+3314200' is not a valid number",
        ),
        (
            ("daily_cap = 60", "daily_cap = 0"),
            "pools.toml:10: pools.reminders.numbers[1].daily_cap: Input should be greater than or equal to 1",
        ),
        (
            ('name = "Clinique StMarc", daily', 'name = "Clinique Saint-Marc", daily'),
            "pools.toml:10: pools.reminders.numbers[1].name: caller name is 19 characters; CNAM allows at most 15",
        ),
        (
            ('name = "Clinique StMarc" }', 'name = "Clinique\\u0007" }'),
            "pools.toml:9: pools.reminders.numbers[0].name: caller name must not contain control characters",
        ),
        (
            ('"Europe/Paris"', '"Europe/Lutece"'),
            "pools.toml:3: defaults.timezone: unknown time zone 'Europe/Lutece'",
        ),
        (('region = "FR"', 'region = "XX"'), "pools.toml:4: defaults.region: unknown region 'XX'"),
        (
            ('"01 42 00 00 02"', '"+33142000001"'),
            "pools.toml:10: pools.reminders.numbers[1].number: +33142000001 is already listed at pools.reminders.numbers[0].number",
        ),
        (("[pools.reminders]", "[pools.reminders\n"), "pools.toml:6: TOML syntax: "),
        (
            ('region = "FR"', 'region = "FR"\nregion = "DE"'),
            'pools.toml:5: TOML syntax: Key "region" already exists.',
        ),
        (
            ('purposes = ["reminder"]', 'purposes = ["reminder"]\non_exhausted = "panic"'),
            "pools.toml:8: pools.reminders.on_exhausted: Input should be 'fallback', 'borrow_reserve' or 'refuse'",
        ),
    ],
)
def test_each_problem_names_its_location(change: tuple[str, str], expected: str) -> None:
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


def test_check_config_cli_lists_problems_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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


# A file whose line numbers are known: each line says what it holds.
NUMBERED = """\
[defaults]
timezone = "Europe/Lutece"
region = "FR"

[pools.reminders]
purposes = ["reminder"]
fallback = "+33142000002"
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique Saint-Marc" },
]

[pools.results]
purposes = ["results"]
daily_cap = "80"
numbers = [ { number = "+33142000010", name = "Resultats" } ]

[pools.followup]
purposes = ["followup"]
numbers = [ { number = "12", name = "Suivi" } ]

[pools.survey]
purposes = ["survey"]
numbers = [ { number = "+33142000030", name = "Enquete" } ]
"""


def test_every_problem_once_at_its_own_line_in_file_line_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    found = problems(NUMBERED)
    # The name on line 10 is reported on line 10 (a text search for its number found line 7,
    # the fallback); the time zone shared by four pools once; the schema error in
    # pools.results hides neither the bad number below it nor the name above it.
    assert found == [
        "pools.toml:2: defaults.timezone: unknown time zone 'Europe/Lutece'",
        "pools.toml:10: pools.reminders.numbers[1].name: caller name is 19 characters; CNAM allows at most 15",
        'pools.toml:15: pools.results.daily_cap: expected a whole number, got the text "80" (numbers are written without quotes)',
        "pools.toml:20: pools.followup.numbers[0].number: '12' is not a valid number (not a possible number)",
    ]
    path = tmp_path / "pools.toml"
    path.write_text(NUMBERED)
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"trustline: invalid configuration in {path} (4 problems):"
    assert (
        err[2]
        == f"{path}:10: pools.reminders.numbers[1].name: caller name is 19 characters; CNAM allows at most 15"
    )


@pytest.mark.parametrize(
    "change,expected",
    [
        (
            ("daily_cap = 60", 'daily_cap = "60"'),
            'numbers[1].daily_cap: expected a whole number, got the text "60"',
        ),
        (
            ("daily_cap = 60", "daily_cap = true"),
            "numbers[1].daily_cap: expected a whole number, got true (a boolean)",
        ),
        (
            ("daily_cap = 60", "daily_cap = 60.5"),
            "numbers[1].daily_cap: expected a whole number, got 60.5",
        ),
        (
            ('region = "FR"', 'region = "FR"\nrest_hours = inf'),
            "defaults.rest_hours: expected a finite number, got inf",
        ),
        (
            ('region = "FR"', 'region = "FR"\nquarantine_days = nan'),
            "defaults.quarantine_days: expected a finite number, got nan",
        ),
        (
            ('region = "FR"', 'region = "FR"\nrest_hours = 1e9'),
            "defaults.rest_hours: Input should be less than or equal to 8784",
        ),
        (
            ('region = "FR"', 'region = "FR"\nrest_hours = "48"'),
            'defaults.rest_hours: expected a number, got the text "48"',
        ),
        (
            ('purposes = ["reminder"]', 'purposes = ["reminder"]\nreserve = "no"'),
            'pools.reminders.reserve: expected true or false (without quotes), got the text "no"',
        ),
        (
            ('name = "Clinique StMarc" }', "name = 42 }"),
            "numbers[0].name: expected text in quotes, got 42",
        ),
        (
            ('purposes = ["reminder"]', 'purposes = ["reminder"]\nfallback = "+33142000099"'),
            "pools.reminders.fallback: +33142000099 is not one of this pool's numbers; to present another number of the centre (a switchboard), declare it in [screening] own_numbers",
        ),
        (
            ("", '[screening.weights]\nwithheld = "80"\n'),
            'screening.weights.withheld: expected a whole number, got the text "80"',
        ),
        (
            ("", "[screening.windows]\nburst_seconds = inf\n"),
            "screening.windows.burst_seconds: expected a finite number, got inf",
        ),
    ],
)
def test_types_are_strict_and_numbers_finite_and_bounded(
    change: tuple[str, str], expected: str
) -> None:
    old, new = change
    text = GOOD.replace(old, new) if old else GOOD + new
    assert text != GOOD
    found = problems(text)
    assert len(found) == 1 and expected in found[0], found


def test_a_fallback_may_be_a_declared_own_number() -> None:
    text = GOOD.replace(
        'purposes = ["reminder"]', 'purposes = ["reminder"]\nfallback = "01 42 00 00 00"'
    )
    assert "not one of this pool's numbers" in problems(text)[0]
    config = parse_config(text + '[screening]\nown_numbers = ["+33142000000"]\n')
    assert config.pools["reminders"].fallback == "+33142000000"
    assert config.pools["reminders"].rules.rest_hours == 48.0  # an integer is a fine float


def test_the_readme_check_config_example_is_what_the_command_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Files a PBX admin edits")[1]
    example = section.split("```toml\n")[1].split("```")[0]
    printed = section.split("$ trustline check-config pools.toml\n")[1].split("```")[0]
    # The README's example file with the three mistakes its output shows.
    (tmp_path / "pools.toml").write_text(
        example.replace("timezone =", "timezon =", 1)
        .replace("daily_cap = 80", 'daily_cap = "80"')
        .replace('name = "Clinique StMarc", daily_cap', 'name = "Clinique Saint-Marc", daily_cap')
    )
    monkeypatch.chdir(tmp_path)
    assert main(["check-config", "pools.toml"]) == 78
    assert capsys.readouterr().err == printed


def test_pools_toml_reads_the_same_as_tomllib_reads_it() -> None:
    """The fast reader (rtoml) and tomllib give the same data, dates and times included."""
    import tomllib

    from agent.config_errors import parse_toml

    for text in (
        (Path(__file__).parents[1] / "agent/examples/pools.toml").read_text(encoding="utf-8"),
        'a = 0x1F\nb = -0.0\nc = "\\u00e9"\nd = [[1, 2], ["x"]]\n[t]\n"x.y" = { e = true }\n',
        "when = 1979-05-27T07:32:00-08:00\nday = 1979-05-27\nat = 07:32:00\n",
        "big = 99999999999999999999\n",
    ):
        assert parse_toml(text, "pools.toml") == tomllib.loads(text)
        assert repr(parse_toml(text, "pools.toml")) == repr(tomllib.loads(text))
