"""AMI wire format: frame bytes into messages and encode actions. No sockets, no logging.

AMI messages are ``Key: Value`` lines ending in CRLF, closed by an empty line. We split on
the raw bytes and decode each whole message at once, so a UTF-8 character split across two
TCP reads is never cut in half (panoramisk decodes every read on its own and drops it).
Every buffer is bounded: a peer that never ends a message cannot make us grow without limit.
"""

from __future__ import annotations

from collections.abc import Mapping

EOL = b"\r\n"
END = b"\r\n\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
# Asterisk's own events stay far below this; a Command response with a long output is the
# largest thing we ask for. Anything bigger is a broken or hostile peer.
MAX_MESSAGE_BYTES = 256 * 1024

Message = dict[str, str]


class FramingError(ValueError):
    """The peer sent something that is not AMI (oversized message, bad banner)."""


def parse_message(raw: bytes) -> Message:
    """One message (without its blank line) to a dict. Repeated keys join with a newline.

    Values keep inner spaces; a line without ``: `` is kept under the empty key (the old
    ``Response: Follows`` command output) so nothing the PBX said is silently lost.
    """
    text = raw.decode("utf-8", "replace")
    msg: Message = {}
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if not sep:
            if line.endswith(":"):  # "Key:" with an empty value and no trailing space
                key, value = line[:-1], ""
            elif not line:
                continue
            else:
                key, value = "", line
        if key in msg:
            msg[key] = msg[key] + "\n" + value
        else:
            msg[key] = value
    return msg


class Framer:
    """Accumulates bytes from reads and yields whole messages, bounded by ``max_bytes``."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = b""
        self._max = max_bytes

    def feed(self, data: bytes) -> list[Message]:
        if self._buf:
            # Most reads of a long message do not end it: look only where an end could be
            # (the new bytes and the seam), so a message fed in tiny reads stays linear.
            if END not in data and END not in self._buf[-3:] + data[:3]:
                self._buf += data
                if len(self._buf) > self._max:
                    raise FramingError(f"AMI message larger than {self._max} bytes")
                return []
            buf = self._buf + data
        else:
            buf = data
        parts = buf.split(END)
        self._buf = parts.pop()
        if len(self._buf) > self._max:
            raise FramingError(f"AMI message larger than {self._max} bytes")
        # Asterisk sometimes sends a lone CRLF between messages; skip the empty parts.
        return [parse_message(p) for p in parts if p.strip(b"\r\n")]

    @property
    def pending(self) -> int:
        return len(self._buf)


def parse_banner(line: bytes) -> str:
    """``Asterisk Call Manager/13.0.0\\r\\n`` to ``13.0.0``; anything else is not AMI."""
    text = line.decode("utf-8", "replace").strip()
    if not text.startswith(BANNER_PREFIX):
        raise FramingError(f"not an AMI banner: {text[:60]!r}")
    return text[len(BANNER_PREFIX) :]


def _clean(value: str) -> str:
    # A CR or LF inside a value would end the header and inject another one (caller names
    # and config values come from people): strip them, never pass them through.
    return value.replace("\r", " ").replace("\n", " ")


def encode_action(name: str, action_id: str, fields: Mapping[str, str]) -> bytes:
    lines = [f"Action: {_clean(name)}", f"ActionID: {_clean(action_id)}"]
    lines.extend(f"{_clean(k)}: {_clean(v)}" for k, v in fields.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
