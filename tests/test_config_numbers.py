"""pools.toml's numbers read at scale: the short path for numbers already in E.164 gives the
same answers and the same errors as the full parse, and a big file loads whole."""

from __future__ import annotations

import pytest

from agent import phone
from agent.config import parse_config
from agent.errors import ConfigError

WRITTEN = [
    "+33142000001",  # Paris, as written
    "01 42 00 00 02",  # national form
    "+33 1 42 00 00 03",  # spaces
    "0033142000004",  # international prefix
    "+330142000005",  # a national prefix kept after the country code
    "+390612345678",  # Rome: the leading zero is part of the number
    "+12125550100",  # New York
    "+447911123456",  # UK mobile
    "+442079460000",  # London
    "+6421234567",  # New Zealand
    "+80012345678",  # non-geographic (freephone)
    "+3314200",  # too short
    "+33999999999",  # possible, not valid
    "+0123456789",  # no country code starts with 0
    "+1",
    "+",
    "+٣٣١٤٢٠٠٠٠٠٠",  # Arabic-Indic digits
    "+331420000011234567",  # too long
    "not a number",
    "",
]


def answer(convert: object, text: str, region: str) -> str:
    assert callable(convert)
    try:
        return str(convert(text, region))
    except phone.InvalidNumber as exc:
        return f"invalid: {exc}"


@pytest.mark.parametrize("region", ["FR", "US", "IT"])
@pytest.mark.parametrize("text", WRITTEN)
def test_a_listed_number_reads_as_the_full_parse_reads_it(text: str, region: str) -> None:
    assert answer(phone.listed_e164, text, region) == answer(phone.to_e164, text, region)


def pools(entries: list[str]) -> str:
    lines = ",\n".join(f'  {{ number = "{n}", name = "Clinique StMarc" }}' for n in entries)
    return f'[pools.reminders]\npurposes = ["reminder"]\nnumbers = [\n{lines}\n]\n'


def test_a_big_file_loads_every_number_in_e164() -> None:
    numbers = [f"+33{1 + i % 5}{42000000 + i:08d}" for i in range(5000)]
    config = parse_config(pools(numbers))
    assert list(config.numbers) == numbers
    assert {n.name for n in config.pools["reminders"].numbers} == {"Clinique StMarc"}


def test_a_bad_number_among_thousands_is_reported_at_its_line() -> None:
    numbers = [f"+33{1 + i % 5}{42000000 + i:08d}" for i in range(3000)]
    numbers[2500] = "+3314200"
    numbers[2700] = numbers[10]
    with pytest.raises(ConfigError) as info:
        parse_config(pools(numbers))
    assert info.value.problems == [
        "pools.toml:2504: pools.reminders.numbers[2500].number: '+3314200' is not a valid "
        "number (not a possible number)",
        "pools.toml:2704: pools.reminders.numbers[2700].number: +33142000010 is already listed"
        " at pools.reminders.numbers[10].number",
    ]
