"""Routes: /healthz (process up), /readyz (every component ready, with details), /metrics.

The HTTP side shares the event loop with calls, so it must never hold it: /metrics is built on
a thread (agent.metrics), /readyz runs read-only checks at most once a second whatever the
request rate (concurrent requests share one run), and probes are not access-logged at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from agent.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)
access_log = logging.getLogger("agent.http.access")

# A readiness check: name, ok, detail. Optional components report ok=True with their state.
ReadinessCheck = Callable[[], Awaitable[tuple[str, bool, str]]]

READY_CACHE_SECONDS = 1.0
# Scraped and probed every few seconds: one line each at INFO would drown the log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class AccessLogger(AbstractAccessLogger):
    """One line per request; probes and scrapes at DEBUG, anything else at INFO."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "%s %s %s %d %.1f ms",
                request.remote,
                request.method,
                request.path[:100],
                response.status,
                time * 1000,
            )


def make_runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(app, access_log_class=AccessLogger, access_log=access_log)


Readiness = tuple[bool, dict[str, dict[str, object]]]


class _ReadyCache:
    """The checks' answer, reused for ``ttl`` seconds; one run at a time."""

    def __init__(self, checks: Sequence[ReadinessCheck], timeout: float, ttl: float) -> None:
        self._checks = checks
        self._timeout = timeout
        self._ttl = ttl
        self._answer: Readiness | None = None
        self._at = 0.0
        self._running: asyncio.Future[Readiness] | None = None

    async def get(self) -> Readiness:
        if self._answer is not None and time.monotonic() - self._at < self._ttl:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
            self._running.add_done_callback(self._done)
        return await asyncio.shield(self._running)

    def _done(self, future: asyncio.Future[Readiness]) -> None:
        self._running = None
        if not future.cancelled() and future.exception() is None:
            self._answer, self._at = future.result(), time.monotonic()

    async def _run(self) -> Readiness:
        details: dict[str, dict[str, object]] = {}
        ready = True
        for check in self._checks:
            try:
                name, ok, detail = await asyncio.wait_for(check(), self._timeout)
            except TimeoutError:
                name, ok, detail = getattr(check, "__name__", "check"), False, "timed out"
            except Exception as exc:  # a failing check is a not-ready answer, not a 500
                name, ok, detail = getattr(check, "__name__", "check"), False, f"failed: {exc}"
            details[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
        return ready, details


def build_http_app(
    metrics: Metrics,
    checks: Sequence[ReadinessCheck],
    *,
    check_timeout: float = 2.0,
    cache_seconds: float = READY_CACHE_SECONDS,
) -> web.Application:
    app = web.Application()
    ready_cache = _ReadyCache(checks, check_timeout, cache_seconds)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def readyz(_: web.Request) -> web.Response:
        ready, details = await ready_cache.get()
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": details},
            status=200 if ready else 503,
        )

    async def metrics_view(_: web.Request) -> web.Response:
        body = await metrics.render_async()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
