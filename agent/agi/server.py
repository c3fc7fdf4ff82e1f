"""FastAGI server: owns the socket, the wire protocol, limits and deadlines.

Asterisk connects, sends ``agi_*: value`` lines ended by a blank line, then waits for our
commands (agent.agi.session speaks them). Asterisk has no timeout of its own: a silent server
stalls the call, so every route is answered within the deadline, falling back to the route's
declared safe answer.

panoramisk's FastAGI Application is not used: it spins forever on a connection closed before
the blank line, reads without size limits, matches routes with their query string, and
swallows CancelledError (tests/test_panoramisk_fastagi.py shows the first two). This module
may parse and write bytes and call routes; it must not hold policy.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import parse_qsl

from agent.agi.headers import HeaderBlock, HeaderError
from agent.agi.routing import AgiAnswer, AgiRequest, Route
from agent.agi.session import AgiSession, Hangup, ProtocolError

log = logging.getLogger(__name__)

MAX_LINE = 8192  # Asterisk's own header lines are < 1 KiB; a longer line is not Asterisk
MAX_HEADER_BLOCK = 32768  # the whole agi_* block (~1 KiB from a real Asterisk)
MAX_HEADERS = 200


RouteFactory = Callable[[], Mapping[str, Route]]


class FastAgiServer:
    def __init__(
        self,
        routes: Mapping[str, Route] | RouteFactory,
        *,
        deadline: float,
        allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None,
        header_timeout: float = 5.0,
        reply_timeout: float = 5.0,
        on_answer: AnswerHook | None = None,
        fallback_route: Route | None = None,
        max_in_flight: int = 256,
    ) -> None:
        self._routes = routes
        self.deadline = deadline
        self._allowed = allowed  # None: no check (tests, embedding); (): nobody
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._warn = RateLimitedWarnings(log)
        self._header_timeout = header_timeout
        self._reply_timeout = reply_timeout
        self._on_answer = on_answer
        self._fallback_route = fallback_route
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._peer_verdicts: dict[str, bool] = {}  # the PBX connects from one or two addresses

    @property
    def sockets(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEADER_BLOCK)
        log.info("fastagi: listening on %s", ", ".join(f"{h}:{p}" for h, p in self.sockets))

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, give open sessions ``grace`` seconds to finish, then cancel them."""
        if self._server is not None:
            self._server.close()
        if self._sessions:
            _, pending = await asyncio.wait(self._sessions, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._server = None

    def _peer_allowed(self, host: str) -> bool:
        if self._allowed is None:
            return True
        known = self._peer_verdicts.get(host)
        if known is None:
            if len(self._peer_verdicts) > 1024:  # a scan from many addresses: stay bounded
                self._peer_verdicts.clear()
            known = self._peer_verdicts[host] = self._check_peer(host)
        return known

    def _check_peer(self, host: str) -> bool:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._allowed or ())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = time.perf_counter()  # the deadline counts from here, not from the headers
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        peername = writer.get_extra_info("peername") or ("?", 0)
        peer = f"{peername[0]}:{peername[1]}"
        try:
            if not self._peer_allowed(str(peername[0])):
                log.warning("%s fastagi: peer not in TRUSTLINE_AGI_ALLOW, closing", peer)
                return
            await self._session(reader, writer, peer, accepted)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("%s fastagi: peer closed the connection early", peer)
        except TimeoutError:
            log.info("%s fastagi: peer went silent, closing", peer)
        except ProtocolError as exc:
            log.warning("%s fastagi: not FastAGI (%s), closing", peer, exc)
        except Hangup:
            log.debug("%s fastagi: channel hung up before the answer was complete", peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s fastagi: unexpected error; the server keeps serving", peer)
        finally:
            self._sessions.discard(task)
            writer.close()  # the transport flushes what is buffered, then closes

    async def _read_headers(self, reader: asyncio.StreamReader, peer: str) -> HeaderBlock:
        """The agi_* block up to its blank line, bounded in size; stray lines are tolerated."""
        block = HeaderBlock()
        size = count = 0
        done = False
        while not done:
            # Up to the next blank line in one read: usually the whole block. A blank line
            # inside a caller name ends a chunk early; the parser then asks for more.
            try:
                chunk = await reader.readuntil(b"\n\n")
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"no end of headers within {MAX_HEADER_BLOCK} bytes") from None
            size += len(chunk)
            lines = chunk.decode("utf-8", "replace").split("\n")[:-1]
            count += len(lines)
            if size > MAX_HEADER_BLOCK or count > MAX_HEADERS:
                raise ProtocolError(
                    f"header block over {MAX_HEADER_BLOCK} bytes or {MAX_HEADERS} lines"
                )
            for line in lines:
                if len(line) > MAX_LINE:
                    raise ProtocolError(f"header line longer than {MAX_LINE} bytes")
                try:
                    done = block.feed(line.rstrip("\r"))
                except HeaderError as exc:
                    raise ProtocolError(str(exc)) from None
                if done:
                    break  # a blank line ends a chunk, so nothing of this chunk is left
        if block.stray:
            # Never the lines themselves: they are pieces of a caller name or number.
            log.info(
                "%s fastagi: %d stray header line(s) ignored (line breaks in a value)",
                peer,
                block.stray,
            )
        return block

    def _request(self, block: HeaderBlock, peer: str) -> AgiRequest:
        headers = block.headers
        script = headers.get("agi_network_script", "")
        path, _, query = script.partition("?")
        return AgiRequest(
            route=path.strip("/"),
            query=_query(query),
            args=block.args,
            env=headers,
            peer=peer,
        )

    async def _session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        accepted: float,
    ) -> None:
        async with asyncio.timeout(self._header_timeout):
            block = await self._read_headers(reader, peer)
        request = self._request(block, peer)
        routes = self._routes() if callable(self._routes) else self._routes
        route = routes.get(request.route)
        failure = ""
        if route is None:
            # The name as given never reaches a log line whole nor a metric label: a dialplan
            # may have put a patient's number in it (agi://host/outbound/${EXTEN}).
            self._warn.warning(
                "unknown_route",
                "%s fastagi: unknown route (uniqueid %s)",
                peer,
                request.uniqueid,
            )
            label, failure = "unknown", "unknown_route"
            route = self._fallback_route
            answer = route.on_failure(request, failure) if route else AgiAnswer()
        else:
            label = route.name
            remaining = self.deadline - (time.perf_counter() - accepted)
            if self._in_flight >= self._max_in_flight or remaining <= 0:
                # Overload: answer at once with the fallback, do no store work.
                failure = "overload"
                self._warn.warning(
                    "overload:" + label,
                    "%s fastagi: %s shed (%d in flight, %.0f ms left of the deadline)",
                    peer,
                    label,
                    self._in_flight,
                    max(remaining, 0) * 1000,
                )
                answer = route.on_failure(request, failure)
            else:
                answer, failure = await self._decide(route, request, remaining)
        if self._on_answer is not None:
            self._on_answer(label, answer, time.perf_counter() - accepted, failure)
        session = AgiSession(reader, writer, peer, self._reply_timeout)
        async with asyncio.timeout(self._reply_timeout):
            for name, value in answer.variables:
                reply = await session.set_variable(name, value)
                if reply.code != 200:
                    self._warn.warning(
                        "refused",
                        "%s fastagi: Asterisk refused SET VARIABLE %s: %s",
                        peer,
                        name,
                        reply.lines[0][:80],
                    )
        log.debug("%s fastagi: %s answered %s", peer, label, answer.outcome)

    async def _decide(
        self, route: Route, request: AgiRequest, remaining: float
    ) -> tuple[AgiAnswer, str]:
        self._in_flight += 1
        try:
            # asyncio.timeout, not wait_for: no extra task per call on the hot path.
            async with asyncio.timeout(remaining):
                return await route.handle(request), ""
        except TimeoutError:
            self._warn.warning(
                "deadline:" + route.name,
                "%s fastagi: %s missed the %.0f ms deadline (uniqueid %s)",
                request.peer,
                route.name,
                self.deadline * 1000,
                request.uniqueid,
            )
            return route.on_failure(request, "deadline"), "deadline"
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s fastagi: %s failed (uniqueid %s); answering safely",
                request.peer,
                route.name,
                request.uniqueid,
            )
            return route.on_failure(request, "internal_error"), "internal_error"
        finally:
            self._in_flight -= 1


@functools.lru_cache(maxsize=64)  # a dialplan has a handful of scripts: parsed once each
def _query(text: str) -> Mapping[str, str]:
    return MappingProxyType(dict(parse_qsl(text, keep_blank_values=True)))


# route label, answer, seconds since accept, failure ("" or deadline, overload, ...)
AnswerHook = Callable[[str, AgiAnswer, float, str], None]


class RateLimitedWarnings:
    """One warning per kind per ``interval`` seconds; the next one says how many were skipped.

    Under overload every call misses: one line per call would flood the log and cost CPU.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0, kinds: int = 64) -> None:
        self._log = logger
        self._interval = interval
        self._kinds = kinds
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last, skipped = self._last.get(kind, (-self._interval, 0))
        if now - last < self._interval:
            self._last[kind] = (last, skipped + 1)
            return
        if len(self._last) >= self._kinds and kind not in self._last:
            self._last.clear()
        self._last[kind] = (now, 0)
        if skipped:
            msg += " (%d more like this in the last %.0f s)"
            args = (*args, skipped, self._interval)
        self._log.warning(msg, *args)
