"""One FastAGI session after its headers: send commands, read replies, quote values.

Asterisk answers every command with one reply line (``200 result=N (data)``, ``510 ...``,
``511 ...``) or a multi-line ``520-...`` / ``520 End...`` block, and a bare ``HANGUP`` line may
arrive before any reply. May: read and write one connection's bytes, bounded in size. Must
not: bound time (the server holds one deadline per session), route, or hold policy.
"""

from __future__ import annotations

import asyncio
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
    clean = value[:MAX_VALUE].translate(_CONTROLS)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AgiSession:
    """One FastAGI connection after its headers: send commands, read replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        reply_timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.peer = peer
        self._reply_timeout = reply_timeout
        self.hung_up = False

    async def _line(self) -> str:
        # The caller bounds the whole exchange in time (one timer per session, not per line).
        try:
            raw = await self._reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ProtocolError("reply line too long") from None
        # Asterisk sends its channel's bytes as they are; never fail on a stray byte.
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def command(self, line: str) -> Reply:
        if "\n" in line or "\r" in line:
            raise ValueError("an AGI command is one line")
        # One short line, then we wait for its reply: the buffer never grows, no drain needed.
        self._writer.write(line.encode("utf-8") + b"\n")
        while True:
            first = await self._line()
            if first == "HANGUP":
                # Asterisk tells us the channel hung up; the reply to our command still follows.
                self.hung_up = True
                continue
            if first.startswith("100 "):
                continue  # "100 result=0 Trying..." precedes the real reply
            break
        lines = [first]
        if first.startswith("520-"):
            while True:
                nxt = await self._line()
                lines.append(nxt)
                if nxt.startswith("520 "):
                    break
                if len(lines) > 200:
                    raise ProtocolError("usage block without an end")
        reply = parse_reply(lines)
        if reply.code == 511:
            self.hung_up = True
            raise Hangup(first)
        return reply

    async def set_variable(self, name: str, value: str) -> Reply:
        return await self.command(f"SET VARIABLE {name} {quote(value)}")
