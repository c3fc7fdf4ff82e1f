"""One FastAGI connection as an asyncio protocol: bytes in, the answer's commands out.

Phases: the ``agi_*`` header block (bounded in bytes, lines and time), the decision (the
server's, one task bounded by the deadline that counts from accept), then one ``SET VARIABLE``
per answer variable, each waiting for Asterisk's reply (one time limit for the whole exchange).
A protocol rather than a stream pair: no reader/writer objects, no per-line coroutine. The
deadline is a timer of its own; the header and reply time limits are a loop time
(``silent_at``) that the server's sweep checks every 0.1 s, so a session arms one timer, not
three (making and cancelling one costs about 1.5 us); the hot path is a few method calls per
received chunk.

May: parse and write one connection's bytes, arm its timers. Must not: choose a route, decide
an answer, or hold policy (agent.agi.server does that through ``Sessions``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, cast

from agent.agi.headers import HeaderBlock, HeaderError
from agent.agi.routing import AgiAnswer
from agent.agi.session import Hangup, ProtocolError, ReplyReader, quote

if TYPE_CHECKING:
    from agent.agi.server import FastAgiServer

log = logging.getLogger("agent.agi.server")  # one logger for the server and its sessions

MAX_LINE = 8192  # Asterisk's own header lines are < 1 KiB; a longer line is not Asterisk
MAX_HEADER_BLOCK = 32768  # the whole agi_* block (~1 KiB from a real Asterisk)
MAX_HEADERS = 200
MAX_REPLY_LINE = MAX_HEADER_BLOCK

_HEADERS, _DECIDING, _REPLIES, _DONE = range(4)


class AgiConnection(asyncio.Protocol):
    """One session; the server creates one per accepted connection."""

    def __init__(self, server: FastAgiServer) -> None:
        self._server = server
        self._loop = server.loop
        self._transport: asyncio.Transport | None = None
        self._phase = _HEADERS
        self._buf = b""
        self._size = self._lines = 0
        self._block = HeaderBlock()
        self._deadline: asyncio.TimerHandle | None = None
        self.silent_at = math.inf  # loop time after which a silent peer is dropped (sweep())
        self._pending: list[tuple[str, str]] = []
        self._reply = ReplyReader()
        self.accepted = 0.0
        self.peer = "?:0"
        self.task: asyncio.Task[AgiAnswer] | None = None

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.accepted = time.perf_counter()  # the deadline counts from here, not the headers
        # uvloop's transports are not asyncio.Transport subclasses, but speak the same API.
        self._transport = transport = cast(asyncio.Transport, transport)
        name = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{name[0]}:{name[1]}"
        if not self._server.peer_allowed(str(name[0])):
            log.warning("%s fastagi: peer not in TRUSTLINE_AGI_ALLOW, closing", self.peer)
            self._phase = _DONE
            transport.close()
            return
        self._server.connections.add(self)
        self._arm(self._server._header_timeout)  # checked by the server's sweep

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            if self._phase == _HEADERS:
                self._read_headers()
            if self._phase == _REPLIES:
                self._read_replies()
            elif self._phase == _DECIDING and len(self._buf) > MAX_REPLY_LINE:
                raise ProtocolError("unasked data while deciding")
        except ProtocolError as exc:
            self.finish(logging.WARNING, "not FastAGI (%s), closing", exc)
        except Hangup:
            self.finish(logging.DEBUG, "channel hung up before the answer was complete")
        except Exception:
            log.exception("%s fastagi: unexpected error; the server keeps serving", self.peer)
            self.finish(logging.DEBUG, "closed after an unexpected error")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._phase in (_HEADERS, _REPLIES):
            self.finish(logging.DEBUG, "peer closed the connection early")
        # While deciding, the decision goes on: its claims are settled and counted, and the
        # answer then finds the connection closed (answer()).

    @property
    def finished(self) -> bool:
        return self._phase == _DONE

    # -- phases ----------------------------------------------------------------------------
    def _read_headers(self) -> None:
        if not self._lines and len(self._buf) <= MAX_LINE:
            # Usually the whole block in one chunk, in Asterisk's plain form: one match.
            cut = self._buf.find(b"\n\n") + 2
            if cut > 1 and self._block.take_whole(self._buf[:cut].decode("utf-8", "replace")):
                self._buf = self._buf[cut:]
                self._headers_done()
                return
        end = self._buf.rfind(b"\n") + 1  # complete lines only: usually the whole block
        rest = self._buf[end:]
        if len(rest) > MAX_LINE:
            raise ProtocolError(f"header line longer than {MAX_LINE} bytes")
        if not end:
            return
        self._size += end
        lines = self._buf[:end].decode("utf-8", "replace").split("\n")
        lines.pop()  # the empty piece after the last line end
        self._lines += len(lines)
        if self._size > MAX_HEADER_BLOCK or self._lines > MAX_HEADERS:
            raise ProtocolError(
                f"header block over {MAX_HEADER_BLOCK} bytes or {MAX_HEADERS} lines"
            )
        if any(len(line) > MAX_LINE for line in lines):
            raise ProtocolError(f"header line longer than {MAX_LINE} bytes")
        try:
            done = self._block.feed_lines([line.rstrip("\r") for line in lines])
        except HeaderError as exc:
            raise ProtocolError(str(exc)) from None
        if done < 0:
            self._buf = rest
            return
        after = lines[done + 1 :]  # lines past the block: replies to come, kept for later
        self._buf = ("\n".join(after) + "\n").encode() + rest if after else rest
        self._headers_done()

    def _headers_done(self) -> None:
        self._phase = _DECIDING
        self._disarm()
        if self._block.stray:
            # Never the lines themselves: they are pieces of a caller name or number.
            log.info(
                "%s fastagi: %d stray header line(s) ignored (line breaks in a value)",
                self.peer,
                self._block.stray,
            )
        self._server.begin(self, self._block)

    def arm_deadline(self, seconds: float) -> None:
        self._deadline = self._loop.call_later(seconds, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.task is not None and not self.task.done():
            self.task.cancel()  # its done callback answers with the route's failure policy

    def answer(self, answer: AgiAnswer) -> None:
        """Send the answer's variables, one command per reply, then close."""
        self._disarm()
        transport = self._transport
        if transport is None or transport.is_closing():
            self.finish(logging.DEBUG, "peer closed the connection early")
            return
        self._phase = _REPLIES
        self._pending = list(reversed(answer.variables))
        self._arm(self._server._reply_timeout)
        self._next_command()
        if self._buf and self._phase == _REPLIES:  # bytes that came while deciding (HANGUP)
            self.data_received(b"")

    def _next_command(self) -> None:
        if not self._pending:
            self.finish(logging.DEBUG, "answered")
            return
        name, value = self._pending[-1]
        assert self._transport is not None
        self._transport.write(f"SET VARIABLE {name} {quote(value)}\n".encode())

    def _read_replies(self) -> None:
        while self._phase == _REPLIES:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return
            raw, self._buf = self._buf[:end], self._buf[end + 1 :]
            reply = self._reply.feed(raw.decode("utf-8", "replace").rstrip("\r"))
            if reply is None:
                continue
            name = self._pending.pop()[0]
            if reply.code != 200:
                self._server.warn(
                    "refused",
                    "%s fastagi: Asterisk refused SET VARIABLE %s: %s",
                    self.peer,
                    name,
                    reply.lines[0][:80],
                )
            self._next_command()

    # -- timers and the end ----------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        """The peer must be heard from within ``seconds`` (the header block, the replies)."""
        self.silent_at = self._loop.time() + seconds

    def _disarm(self) -> None:
        self.silent_at = math.inf
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def went_silent(self) -> None:
        """The server's sweep found ``silent_at`` passed."""
        self.finish(logging.INFO, "peer went silent, closing")

    def finish(self, level: int, why: str, *args: object) -> None:
        """End the session: log why (with the peer first), close, forget it."""
        if self._phase == _DONE:
            return
        self._phase = _DONE
        self._disarm()
        if log.isEnabledFor(level):
            log.log(level, "%s fastagi: " + why, self.peer, *args)
        if self._transport is not None:
            self._transport.close()  # the transport flushes what is buffered, then closes
        self._server.connections.discard(self)

    def abort(self) -> None:
        """Server stop after its grace period: cancel the decision, drop the connection."""
        if self.task is not None:
            self.task.cancel()
        self.finish(logging.DEBUG, "closed at shutdown")
        if self._transport is not None:
            self._transport.abort()
