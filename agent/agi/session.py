"""FastAGI replies and command values: parse what Asterisk answers, quote what we send.

Asterisk answers every command with one reply line (``200 result=N (data)``, ``510 ...``,
``511 ...``) or a multi-line ``520-...`` / ``520 End...`` block, and a bare ``HANGUP`` line may
arrive before any reply. Pure: no I/O (agent.agi.connection owns the bytes and the time).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_VALUE = 1024  # values stay far below Asterisk's 2 KiB command split on older versions


class ProtocolError(Exception):
    """The peer does not speak FastAGI (garbage, oversized lines, too many headers)."""


class Hangup(Exception):
    """The channel is gone (HANGUP line or 511 reply): stop sending commands."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    result: str
    data: str
    lines: tuple[str, ...]


_OK = Reply(200, "1", "", ("200 result=1",))


def parse_reply(lines: list[str]) -> Reply:
    """``200 result=1 (data)`` and friends. Data keeps inner quotes as Asterisk sends them."""
    first = lines[0]
    if first == "200 result=1":
        return _OK  # every SET VARIABLE's answer
    code_text, _, rest = first.partition(" ")
    code_text = code_text[:3]
    # isdigit() alone accepts '²' or Arabic-Indic digits, which int() then refuses.
    if len(code_text) != 3 or not (code_text.isascii() and code_text.isdigit()):
        raise ProtocolError("reply does not start with a status code")
    code = int(code_text)
    result = data = ""
    if code == 200 and rest.startswith("result="):
        value, _, tail = rest[len("result=") :].partition(" ")
        result = value
        tail = tail.strip()
        if tail.startswith("(") and tail.endswith(")"):
            data = tail[1:-1]
        elif tail:
            data = tail
    return Reply(code, result, data, tuple(lines))


_CONTROLS = {c: " " for c in [*range(32), 127]}


def quote(value: str) -> str:
    """A value as one quoted AGI argument: no CR/LF/control chars (they would start a second
    command), backslash and double quote escaped, length bounded."""
    clean = value[:MAX_VALUE]
    if not clean.isprintable():  # rare; translate looks each distinct character up
        clean = clean.translate(_CONTROLS)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ReplyReader:
    """Asterisk's reply to one command, fed line by line (without the line end).

    ``feed`` returns the reply once complete, None while more lines are due. A ``HANGUP``
    line or a ``100 Trying`` line may come before the reply; a 511 reply raises ``Hangup``.
    """

    __slots__ = ("_lines", "hung_up")

    def __init__(self) -> None:
        self._lines: list[str] = []
        self.hung_up = False

    def feed(self, line: str) -> Reply | None:
        if self._lines:  # inside a 520- usage block
            self._lines.append(line)
            if line.startswith("520 "):
                lines, self._lines = self._lines, []
                return parse_reply(lines)
            if len(self._lines) > 200:
                raise ProtocolError("usage block without an end")
            return None
        if line == "HANGUP":
            # Asterisk tells us the channel hung up; the reply to our command still follows.
            self.hung_up = True
            return None
        if line.startswith("100 "):
            return None  # "100 result=0 Trying..." precedes the real reply
        if line.startswith("520-"):
            self._lines.append(line)
            return None
        reply = parse_reply([line])
        if reply.code == 511:
            self.hung_up = True
            raise Hangup(line)
        return reply
