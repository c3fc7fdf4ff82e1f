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
_KNOWN = frozenset(ASTERISK_ORDER)
MAX_ARGS = 64  # AGI(url,args...): Asterisk's own limit is 128 arguments in all


class HeaderError(Exception):
    """The bytes cannot be a FastAGI header block (not even a stray-tolerant reading)."""


@dataclass
class HeaderBlock:
    """Feed the block line by line (without the line end); ``feed`` says when it is over."""

    headers: dict[str, str] = field(default_factory=dict)
    stray: int = 0  # lines that were pieces of a value, not headers
    _args: dict[int, str] = field(default_factory=dict)

    def feed(self, line: str) -> bool:
        if not line:
            if not self.headers:
                raise HeaderError("blank line before any header")
            if _FIRST_FOREIGN in self.headers and _LAST_FIXED not in self.headers:
                self.stray += 1  # a line break inside a caller number or name
                return False
            return True
        key, sep, value = line.partition(":")
        if not self.headers and not (sep and key in _KNOWN):
            # Asterisk's first line is always a header (agi_network: yes): this is not AGI.
            raise HeaderError("first line is not an agi_* header")
        if not sep:
            self.stray += 1
            return False
        if value.startswith(" "):
            value = value[1:]
        if key.startswith("agi_arg_"):
            index = key[len("agi_arg_") :]
            if index.isascii() and index.isdigit() and 0 < int(index) <= MAX_ARGS:
                self._args[int(index)] = value  # last wins: a forged copy comes first
            else:
                self.stray += 1
            return False
        if key not in _KNOWN:
            self.stray += 1
            return False
        if key in _FIRST_WINS:
            self.headers.setdefault(key, value)
        else:
            self.headers[key] = value
        return False

    @property
    def args(self) -> tuple[str, ...]:
        """agi_arg_1..N, as long as they run without a gap."""
        out: list[str] = []
        while len(out) + 1 in self._args:
            out.append(self._args[len(out) + 1])
        return tuple(out)
