"""AMI framing on the captured bytes: any split of the stream gives the same messages."""

from __future__ import annotations

import pytest

from agent.ami.protocol import Framer, FramingError, encode_action, parse_banner, parse_message
from tests.ami_replay import events, load

STREAM = b"".join(events("ami-answered") + events("ami-userevent"))


def test_any_read_size_gives_the_same_messages() -> None:
    whole = Framer().feed(STREAM)
    assert len(whole) == len(events("ami-answered") + events("ami-userevent"))
    for size in (1, 2, 3, 5, 4096):
        framer = Framer()
        pieces = [framer.feed(STREAM[i : i + size]) for i in range(0, len(STREAM), size)]
        assert [m for p in pieces for m in p] == whole
        assert framer.pending == 0


def test_captured_values_are_kept_exactly() -> None:
    cdr = next(m for m in Framer().feed(STREAM) if m["Event"] == "Cdr")
    assert cdr["CallerID"] == '"Agent 7" <7007>'
    assert cdr["AccountCode"] == ""
    quoted = next(m for m in Framer().feed(STREAM) if m.get("Variable") == "TRUSTLINE_QUOTED")
    assert quoted["Value"] == 'say \\"hello\\" there'


@pytest.mark.parametrize("size", [1, 1000, 10_000])
def test_a_message_that_never_ends_is_refused(size: int) -> None:
    framer = Framer(max_bytes=4096)
    flood = b"Event: Flood\r\nX: " + b"y" * 9000
    with pytest.raises(FramingError, match="larger than 4096"):
        for i in range(0, len(flood), size):
            framer.feed(flood[i : i + size])


def test_banner_from_the_capture() -> None:
    assert parse_banner(load("ami-actions")[0].data) == "13.0.0"
    with pytest.raises(FramingError):
        parse_banner(b"SSH-2.0-OpenSSH_9.6\r\n")


def test_an_action_value_cannot_inject_a_header() -> None:
    raw = encode_action(
        "DBPut", "id-1", {"Family": "trustline/fallback", "Key": "k\r\nAction: Logoff"}
    )
    message = parse_message(raw.rstrip(b"\r\n"))
    assert message["Action"] == "DBPut"
    assert message["Key"] == "k  Action: Logoff"
