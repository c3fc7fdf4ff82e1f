"""FastAGI server: owns the listening socket, the routes, the in-flight bound and deadlines.

Asterisk connects, sends ``agi_*: value`` lines ended by a blank line, then waits for our
commands (agent.agi.session speaks them). Asterisk has no timeout of its own: a silent server
stalls the call, so every route is answered within the deadline, falling back to the route's
declared safe answer.

panoramisk's FastAGI Application is not used: it spins forever on a connection closed before
the blank line, reads without size limits, matches routes with their query string, and
swallows CancelledError (tests/test_panoramisk_fastagi.py shows the first two). This module
chooses the route and calls it (agent.agi.connection speaks the bytes); it must not hold
policy.
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

from agent.agi.connection import MAX_HEADER_BLOCK, MAX_HEADERS, MAX_LINE, AgiConnection
from agent.agi.headers import HeaderBlock
from agent.agi.routing import AgiAnswer, AgiRequest, Route

log = logging.getLogger(__name__)

__all__ = ["MAX_HEADERS", "MAX_HEADER_BLOCK", "MAX_LINE", "FastAgiServer", "RateLimitedWarnings"]

RouteFactory = Callable[[], Mapping[str, Route]]

# How often open sessions are checked for a peer gone silent (header block or replies not
# coming): their time limits (5 s by default) hold to within this much.
SWEEP_SECONDS = 0.1


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
        self.warn = self._warn.warning
        self._header_timeout = header_timeout
        self._reply_timeout = reply_timeout
        self._on_answer = on_answer
        self._fallback_route = fallback_route
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop  # set by start(), before any connection
        self.connections: set[AgiConnection] = set()  # sessions not finished yet
        self._peer_verdicts: dict[str, bool] = {}  # the PBX connects from one or two addresses

    @property
    def sockets(self) -> list[tuple[str, int]]:
        if self._server is None:
            return []
        return [s.getsockname()[:2] for s in self._server.sockets]

    async def start(self, host: str, port: int) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: AgiConnection(self), host, port, backlog=1024
        )
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)
        log.info("fastagi: listening on %s", ", ".join(f"{h}:{p}" for h, p in self.sockets))

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, give open sessions ``grace`` seconds to finish, then cancel them."""
        if self._server is not None:
            self._server.close()
        until = time.monotonic() + grace
        while self.connections and time.monotonic() < until:  # noqa: ASYNC110 (sessions end in callbacks, not tasks)
            await asyncio.sleep(0.01)
        tasks = [c.task for c in self.connections if c.task is not None]
        for connection in list(self.connections):
            connection.abort()
        if tasks:
            await asyncio.wait(tasks)
        self._server = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        """Drop the sessions whose peer went silent past its time limit; again next tick."""
        self._sweeper = self.loop.call_later(SWEEP_SECONDS, self._sweep)  # first: whatever happens
        now = self.loop.time()
        for connection in [c for c in self.connections if c.silent_at <= now]:
            connection.went_silent()

    def peer_allowed(self, host: str) -> bool:
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

    def begin(self, connection: AgiConnection, block: HeaderBlock) -> None:
        """The header block is in: answer at once (unknown route, overload, late) or start
        the route's decision, bounded by what is left of the deadline."""
        request = self._request(block, connection.peer)
        routes = self._routes() if callable(self._routes) else self._routes
        route = routes.get(request.route)
        if route is None:
            # The name as given never reaches a log line whole nor a metric label: a dialplan
            # may have put a patient's number in it (agi://host/outbound/${EXTEN}).
            self._warn.warning(
                "unknown_route",
                "%s fastagi: unknown route (uniqueid %s)",
                connection.peer,
                request.uniqueid,
            )
            route = self._fallback_route
            answer = route.on_failure(request, "unknown_route") if route else AgiAnswer()
            self._answer(connection, "unknown", answer, "unknown_route")
            return
        remaining = self.deadline - (time.perf_counter() - connection.accepted)
        if self._in_flight >= self._max_in_flight or remaining <= 0:
            # Overload: answer at once with the fallback, do no store work.
            self._warn.warning(
                "overload:" + route.name,
                "%s fastagi: %s shed (%d in flight, %.0f ms left of the deadline)",
                connection.peer,
                route.name,
                self._in_flight,
                max(remaining, 0) * 1000,
            )
            self._answer(connection, route.name, route.on_failure(request, "overload"), "overload")
            return
        self._in_flight += 1
        task = self.loop.create_task(route.handle(request))
        connection.task = task
        connection.arm_deadline(remaining)
        task.add_done_callback(functools.partial(self._decided, connection, route, request))

    def _decided(
        self,
        connection: AgiConnection,
        route: Route,
        request: AgiRequest,
        task: asyncio.Task[AgiAnswer],
    ) -> None:
        self._in_flight -= 1
        connection.task = None
        if connection.finished:
            return  # shut down while deciding: nobody to answer
        failure = ""
        if task.cancelled():
            self._warn.warning(
                "deadline:" + route.name,
                "%s fastagi: %s missed the %.0f ms deadline (uniqueid %s)",
                request.peer,
                route.name,
                self.deadline * 1000,
                request.uniqueid,
            )
            failure = "deadline"
        elif (exc := task.exception()) is not None:
            log.error(
                "%s fastagi: %s failed (uniqueid %s); answering safely",
                request.peer,
                route.name,
                request.uniqueid,
                exc_info=exc,
            )
            failure = "internal_error"
        answer = route.on_failure(request, failure) if failure else task.result()
        self._answer(connection, route.name, answer, failure)

    def _answer(
        self, connection: AgiConnection, label: str, answer: AgiAnswer, failure: str
    ) -> None:
        if self._on_answer is not None:
            self._on_answer(label, answer, time.perf_counter() - connection.accepted, failure)
        connection.answer(answer)


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
