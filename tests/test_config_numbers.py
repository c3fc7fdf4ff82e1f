"""pools.toml's numbers read at scale: the short path for numbers already in E.164 gives the
same answers and the same errors as the full parse, a big file loads whole, and the copy kept in
the data dir gives a restart the very config a full parse gives."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import phone
from agent.config import load_config, parse_config
from agent.config_cache import CACHE_NAME
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


def test_a_restart_reads_the_kept_copy_and_gets_the_same_config(tmp_path: Path) -> None:
    numbers = [f"+33{1 + i % 5}{42000000 + i:08d}" for i in range(2000)] + ["01 42 00 00 02"]
    path = tmp_path / "pools.toml"
    path.write_text(pools(numbers))
    data = tmp_path / "data"
    fresh = load_config(path)
    first = load_config(path, data)
    assert (data / CACHE_NAME).exists()
    again = load_config(path, data)
    for config in (first, again):
        assert config.pools == fresh.pools and config.numbers == fresh.numbers
        assert config.raw == fresh.raw and config.purposes == fresh.purposes
    assert list(again.numbers)[-1] == "+33142000002"


def test_an_edited_file_is_read_again_not_taken_from_the_copy(tmp_path: Path) -> None:
    path, data = tmp_path / "pools.toml", tmp_path / "data"
    path.write_text(pools(["+33142000001", "+33142000002"]))
    load_config(path, data)
    path.write_text(pools(["+33142000001", "+33142000003"]))
    assert list(load_config(path, data).numbers) == ["+33142000001", "+33142000003"]
    path.write_text(pools(["+33142000001", "+3314200"]))
    with pytest.raises(ConfigError) as info:
        load_config(path, data)
    assert info.value.problems == [
        f"{path}:5: pools.reminders.numbers[1].number: '+3314200' is not a valid number"
        " (not a possible number)"
    ]


def test_a_file_with_problems_is_never_kept(tmp_path: Path) -> None:
    path, data = tmp_path / "pools.toml", tmp_path / "data"
    path.write_text(pools(["+33142000001", "+33142000001"]))
    for _ in range(2):  # the second load says the same: nothing was kept from the first
        with pytest.raises(ConfigError) as info:
            load_config(path, data)
        assert info.value.problems == [
            f"{path}:5: pools.reminders.numbers[1].number: +33142000001 is already listed at"
            " pools.reminders.numbers[0].number"
        ]
    assert not (data / CACHE_NAME).exists()


@pytest.mark.parametrize("kept", ["", "{not json", "[]", '{"key": "x", "data": {}}'])
def test_a_damaged_copy_is_ignored_and_replaced(tmp_path: Path, kept: str) -> None:
    path, data = tmp_path / "pools.toml", tmp_path / "data"
    path.write_text(pools(["+33142000001"]))
    data.mkdir()
    (data / CACHE_NAME).write_text(kept)
    assert list(load_config(path, data).numbers) == ["+33142000001"]
    assert list(load_config(path, data).numbers) == ["+33142000001"]
    assert (data / CACHE_NAME).read_text() != kept


@pytest.mark.parametrize(
    "damage",
    [
        lambda cols: cols["e164"].pop(),  # a column shorter than the others
        lambda cols: cols.__setitem__("caps", ["80"] * len(cols["caps"])),  # caps as text
        lambda cols: cols.__setitem__("name_at", [99] * len(cols["name_at"])),  # no such name
    ],
)
def test_a_current_copy_with_damaged_numbers_is_read_again(
    tmp_path: Path, damage: Callable[[dict[str, Any]], object]
) -> None:
    """A copy whose key still matches the file but whose numbers were damaged on disk is not
    trusted: the file is read again, whole, and the copy replaced."""
    path, data = tmp_path / "pools.toml", tmp_path / "data"
    listed = ["+33142000001", "+33142000002"]
    path.write_text(pools(listed))
    first = load_config(path, data)
    kept = json.loads((data / CACHE_NAME).read_text())
    damage(kept["numbers"]["reminders"])
    (data / CACHE_NAME).write_text(json.dumps(kept))
    again = load_config(path, data)
    assert list(again.numbers) == listed
    assert [(n.name, n.daily_cap, n.active) for n in again.numbers.values()] == [
        (n.name, n.daily_cap, n.active) for n in first.numbers.values()
    ]
    assert json.loads((data / CACHE_NAME).read_text()) != kept


def test_a_data_dir_that_cannot_be_written_does_not_stop_loading(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(pools(["+33142000001"]))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert list(load_config(path, blocked / "data").numbers) == ["+33142000001"]


def test_a_kept_copy_gives_back_each_number_its_name_cap_state_and_pool(tmp_path: Path) -> None:
    path, data = tmp_path / "pools.toml", tmp_path / "data"
    path.write_text(
        """
[defaults]
daily_cap = 50
[pools.reminders]
purposes = ["reminder"]
fallback = "01 42 00 00 02"
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Accueil", daily_cap = 7, active = false },
]
[pools.spare]
reserve = true
daily_cap = 20
numbers = [{ number = "+33142000003", name = "Clinique StMarc" }]
"""
    )
    fresh = load_config(path)
    load_config(path, data)
    again = load_config(path, data)
    assert again.pools == fresh.pools and dict(again.numbers) == dict(fresh.numbers)
    assert again.pools["reminders"].fallback_name == "Accueil"
    number = again.numbers["+33142000002"]
    assert (number.name, number.daily_cap, number.active, number.pool) == (
        "Accueil", 7, False, "reminders",
    )  # fmt: skip
    assert again.numbers.get("+33142000003") == fresh.numbers["+33142000003"]
    assert again.numbers["+33142000003"].daily_cap == 20
    assert "+33142000009" not in again.numbers and again.numbers.get("+33142000009") is None
    assert [n.number for n in again.pools["spare"].numbers] == ["+33142000003"]
    assert list(again.numbers.rows()) == [
        ("+33142000001", "reminders", "Clinique StMarc", 50, True),
        ("+33142000002", "reminders", "Accueil", 7, False),
        ("+33142000003", "spare", "Clinique StMarc", 20, True),
    ]
