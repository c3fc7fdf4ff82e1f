"""The FastAGI header block, read the way Asterisk writes it. Pure: no I/O, no policy.

Asterisk (res_agi.c: ``launch_netscript`` then ``setup_env``) writes one ``agi_name: value``
line per header, always in the order of ``ASTERISK_ORDER``, then ``agi_arg_1..N``, then a
blank line. It does not escape values: a caller number or caller name holding a line break
(from a CRM lookup, a non-SIP channel, a dialplan ``Set``) splits into extra lines. Such a
foreign value can only add lines *after* its own header, never before. So:

- headers written before the first foreign value (``agi_callerid``) keep their first value;
- headers written after it, and the arguments, keep their last value (a forged copy can only
  come before the real line);
- any other line (not ``agi_known: value``) is a stray piece of a value: counted, ignored;
- a blank line inside the foreign part (after ``agi_callerid``, before ``agi_threadid``) is a
  stray line too, not the end of the block.

Still the dialplan passes what the agent decides on (callee, caller number) as arguments,
filtered there, so a header is never the source of a number.

Known limit: a name that forges the whole rest of the block (every header through
``agi_threadid``, arguments, then a blank line) ends the block early and its arguments win;
the real lines then arrive as replies and end the session. Bytes alone cannot tell the two
apart (Asterisk writes each line with its own write()); only a dialplan that strips line
breaks from the name before AGI() closes that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The order Asterisk 22 writes (captured in tests/fixtures/asterisk-captures/fastagi-*.jsonl).
ASTERISK_ORDER = (
    "agi_network",
    "agi_network_script",
    "agi_request",
    "agi_channel",
    "agi_language",
    "agi_type",
    "agi_uniqueid",
    "agi_version",
    "agi_callerid",
    "agi_calleridname",
    "agi_callingpres",
    "agi_callingani2",
    "agi_callington",
    "agi_callingtns",
    "agi_dnid",
    "agi_rdnis",
    "agi_context",
    "agi_extension",
    "agi_priority",
    "agi_enhanced",
    "agi_accountcode",
    "agi_threadid",
)
_FIRST_FOREIGN = "agi_callerid"
_LAST_FIXED = "agi_threadid"
_FIRST_WINS = frozenset(ASTERISK_ORDER[: ASTERISK_ORDER.index(_FIRST_FOREIGN) + 1])
_FIRST, _LAST = "first", "last"  # which copy of a repeated header wins
_KIND = {key: _FIRST if key in _FIRST_WINS else _LAST for key in ASTERISK_ORDER}
MAX_ARGS = 64  # AGI(url,args...): Asterisk's own limit is 128 arguments in all

# The block as Asterisk writes it when no value holds a line break: every header once, in
# order, then the arguments, then the blank line. Read with one match; anything else (another
# version's headers, a stray line, a CR, a repeated argument) goes line by line (feed_lines),
# which gives the same reading for this form.
_CANONICAL = re.compile(
    "".join(f"{key}: (?P<{key}>[^\r\n]*)\n" for key in ASTERISK_ORDER)
    + r"(?P<_args>(?:agi_arg_[0-9]{1,3}: [^\r\n]*\n)*)\n"
)


class HeaderError(Exception):
    """The bytes cannot be a FastAGI header block (not even a stray-tolerant reading)."""


@dataclass
class HeaderBlock:
    """Feed the block line by line (without the line end); ``feed`` says when it is over."""

    headers: dict[str, str] = field(default_factory=dict)
    stray: int = 0  # lines that were pieces of a value, not headers
    _args: dict[int, str] = field(default_factory=dict)

    def take_whole(self, text: str) -> bool:
        """Read a whole block (ending with its blank line) written in Asterisk's plain form;
        False, reading nothing, when it is not in that form (then feed it line by line)."""
        found = _CANONICAL.fullmatch(text)
        if found is None or self.headers:
            return False
        headers = found.groupdict()
        args: dict[int, str] = {}
        for line in headers.pop("_args").split("\n")[:-1]:
            key, _, value = line.partition(": ")
            index = int(key[len("agi_arg_") :])
            if not 0 < index <= MAX_ARGS or index in args:
                return False  # past the limit or repeated: the line-by-line rules decide
            args[index] = value
        self.headers, self._args = headers, args
        return True

    def feed(self, line: str) -> bool:
        return self.feed_lines([line]) == 0

    def feed_lines(self, lines: list[str]) -> int:
        """Feed lines in order; the index of the blank line that ends the block, else -1.
        One call per received chunk: the whole block usually comes in one."""
        headers, args = self.headers, self._args
        for i, line in enumerate(lines):
            if not line:
                if not headers:
                    raise HeaderError("blank line before any header")
                if _FIRST_FOREIGN in headers and _LAST_FIXED not in headers:
                    self.stray += 1  # a line break inside a caller number or name
                    continue
                return i
            key, sep, value = line.partition(":")
            kind = _KIND.get(key) if sep else None
            if not headers and kind is None:
                # Asterisk's first line is always a header (agi_network: yes): not AGI.
                raise HeaderError("first line is not an agi_* header")
            if value[:1] == " ":
                value = value[1:]
            if kind is _FIRST:
                headers.setdefault(key, value)
            elif kind is _LAST:
                headers[key] = value
            elif sep and key.startswith("agi_arg_"):
                index = key[len("agi_arg_") :]
                if index.isascii() and index.isdigit() and 0 < int(index) <= MAX_ARGS:
                    args[int(index)] = value  # last wins: a forged copy comes first
                else:
                    self.stray += 1
            else:
                self.stray += 1  # no colon, or not a header Asterisk writes
        return -1

    @property
    def args(self) -> tuple[str, ...]:
        """agi_arg_1..N, as long as they run without a gap."""
        out: list[str] = []
        while len(out) + 1 in self._args:
            out.append(self._args[len(out) + 1])
        return tuple(out)
