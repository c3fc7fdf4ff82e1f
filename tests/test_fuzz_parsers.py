"""Bounded fuzzing of the parsers that read a peer's bytes: the FastAGI header block and
replies, and AMI framing. None may raise anything but the project's declared errors.

The number of examples is small here (the suite must stay fast); ``bench/fuzz.py`` runs the
same properties with many more (``TRUSTLINE_FUZZ_EXAMPLES``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.agi.headers import HeaderBlock, HeaderError
from agent.agi.session import ProtocolError, parse_reply, quote
from agent.ami.protocol import Framer, FramingError, encode_action, parse_banner
from tests.fake_asterisk import header_block

EXAMPLES = int(os.environ.get("TRUSTLINE_FUZZ_EXAMPLES", "150"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces an attacker would put in a caller name, mixed with arbitrary text.
TOKENS = st.sampled_from(
    [
        "\n",
        "\r\n",
        "\n\n",
        ":",
        ": ",
        "agi_callerid: +33612345678",
        "agi_arg_1: x",
        "agi_arg_2: 0472000000",
        "agi_arg_4: +33612345678",
        "agi_callingpres: 32",
        "agi_network_script: nosuch",
        "agi_",
        "²",
        "\x00",
    ]
)
# The fake Asterisk writes latin-1 bytes, as the captures are stored.
HOSTILE = st.lists(TOKENS | st.text(st.characters(max_codepoint=255), max_size=8), max_size=12).map(
    "".join
)


def _feed(block: HeaderBlock, data: bytes) -> None:
    for raw in data.split(b"\n"):
        if block.feed(raw.decode("utf-8", "replace").rstrip("\r")):
            return


@fuzz
@given(st.lists(st.text(max_size=40), max_size=40))
def test_header_lines_raise_only_header_error(lines: list[str]) -> None:
    block = HeaderBlock()
    try:
        for line in lines:
            if block.feed(line):
                break
    except HeaderError:
        return
    assert all(isinstance(a, str) for a in block.args)


@fuzz
@given(HOSTILE, HOSTILE)
def test_a_hostile_name_or_number_never_changes_the_arguments_or_the_first_callerid(
    name: str, number: str
) -> None:
    args = ["0142000001", "A", "", "33612349999"]
    real = HeaderBlock()
    _feed(real, header_block("fastagi-inbound.jsonl", "inbound", args))
    hostile = HeaderBlock()
    data = header_block(
        "fastagi-inbound.jsonl",
        "inbound",
        args,
        {"agi_calleridname": name, "agi_callerid": "0611111111" + number},
    )
    _feed(hostile, data)
    assert hostile.args[: len(args)] == real.args == tuple(args)
    assert hostile.headers["agi_callerid"].startswith("0611111111")
    assert hostile.headers["agi_network_script"] == "inbound"
    assert hostile.headers["agi_uniqueid"] == real.headers["agi_uniqueid"]


@fuzz
@given(st.lists(st.text(max_size=60), min_size=1, max_size=5))
def test_replies_raise_only_protocol_error(lines: list[str]) -> None:
    try:
        reply = parse_reply(lines)
    except ProtocolError:
        return
    assert 0 <= reply.code <= 999


@fuzz
@given(st.text(max_size=300))
def test_a_quoted_value_is_always_one_line(value: str) -> None:
    quoted = quote(value)
    assert "\n" not in quoted and "\r" not in quoted
    assert quoted.startswith('"') and quoted.endswith('"')


@fuzz
@given(st.lists(st.binary(max_size=200), max_size=20), st.integers(64, 4096))
def test_ami_framing_raises_only_framing_error(chunks: list[bytes], limit: int) -> None:
    framer = Framer(max_bytes=limit)
    try:
        for chunk in chunks:
            for message in framer.feed(chunk):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.items())
    except FramingError:
        return


@fuzz
@given(st.binary(max_size=200))
def test_ami_banner_raises_only_framing_error(line: bytes) -> None:
    try:
        parse_banner(line)
    except FramingError:
        return


@fuzz
@given(st.text(max_size=30), st.dictionaries(st.text(max_size=20), st.text(max_size=40)))
def test_an_encoded_action_is_one_message_with_its_fields(
    name: str, fields: dict[str, str]
) -> None:
    data = encode_action(name, "id-1", fields)
    assert data.endswith(b"\r\n\r\n")
    assert data[:-4].count(b"\r\n") == len(fields) + 1  # no field can add a line


def _whole(data: bytes) -> HeaderBlock | None:
    """The block read in one match (as the server reads a block in one chunk), else None."""
    end = data.find(b"\n\n") + 2
    block = HeaderBlock()
    return block if end > 1 and block.take_whole(data[:end].decode("utf-8", "replace")) else None


@pytest.mark.parametrize(
    "capture_name",
    ["fastagi-outbound.jsonl", "fastagi-inbound.jsonl", "fastagi-hangup-mid-session.jsonl"],
)
def test_a_block_as_asterisk_wrote_it_is_read_in_one_match_with_the_same_reading(
    capture_name: str,
) -> None:
    data = header_block(capture_name, "outbound", ["reminder", "0612345678", "", "area=13008"])
    whole = _whole(data)
    assert whole is not None  # Asterisk 22's own block takes the one-match reading
    by_line = HeaderBlock()
    _feed(by_line, data)
    assert (whole.headers, whole.args, whole.stray) == (by_line.headers, by_line.args, 0)


@fuzz
@given(HOSTILE, HOSTILE, st.lists(HOSTILE, max_size=5))
def test_the_one_match_reading_never_differs_from_the_line_by_line_one(
    name: str, number: str, args: list[str]
) -> None:
    data = header_block(
        "fastagi-inbound.jsonl",
        "inbound",
        args,
        {"agi_calleridname": name, "agi_callerid": number},
    )
    whole = _whole(data)
    if whole is None:
        return  # not the plain form: only the line-by-line reading applies
    by_line = HeaderBlock()
    _feed(by_line, data)
    assert (whole.headers, whole.args, by_line.stray) == (by_line.headers, by_line.args, 0)
