"""Routes: /healthz (process up), /readyz (every component ready, with details), /metrics.

The HTTP side shares the event loop with calls, so it must never hold it: /metrics is built on
a thread (agent.metrics), /readyz checks are read-only and those doing I/O run at most once a
second whatever the request rate (``cached``), and probes are not access-logged at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from agent.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from agent.http.context import AdminContext

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
                _masked(request.path[:100]),
                response.status,
                time * 1000,
            )


def make_runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(app, access_log_class=AccessLogger, access_log=access_log)


def cached(check: ReadinessCheck, ttl: float = READY_CACHE_SECONDS) -> ReadinessCheck:
    """``check`` run at most once per ``ttl`` seconds, whatever the request rate; requests that
    arrive while it runs share its answer. For checks that do I/O (the store)."""
    answer: tuple[float, tuple[str, bool, str]] | None = None
    running: asyncio.Future[tuple[str, bool, str]] | None = None

    def done(future: asyncio.Future[tuple[str, bool, str]]) -> None:
        nonlocal answer, running
        running = None
        if not future.cancelled() and future.exception() is None:
            answer = (time.monotonic(), future.result())

    async def run() -> tuple[str, bool, str]:
        nonlocal running
        if answer is not None and time.monotonic() - answer[0] < ttl:
            return answer[1]
        if running is None:
            running = asyncio.ensure_future(check())
            running.add_done_callback(done)
        return await asyncio.shield(running)

    run.__name__ = getattr(check, "__name__", "check")
    return run


def _masked(path: str) -> str:
    from agent.http.security import scrub  # a path may name a number: logs show 4 digits

    return scrub(path)


def build_http_app(
    metrics: Metrics,
    checks: Sequence[ReadinessCheck],
    *,
    check_timeout: float = 2.0,
    admin: AdminContext | None = None,
) -> web.Application:
    """``checks`` run on every /readyz request: wrap those that do I/O in ``cached``.
    ``admin``: also serve the API (/api/v1/) and the dashboard (/)."""
    if admin is None:
        app = web.Application()
    else:
        from agent.http.security import error_middleware

        app = web.Application(middlewares=[error_middleware()])

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "up"})

    async def readyz(_: web.Request) -> web.Response:
        details: dict[str, dict[str, object]] = {}
        ready = True
        for check in checks:
            try:
                name, ok, detail = await asyncio.wait_for(check(), check_timeout)
            except TimeoutError:
                name, ok, detail = getattr(check, "__name__", "check"), False, "timed out"
            except Exception as exc:  # a failing check is a not-ready answer, not a 500
                name, ok, detail = getattr(check, "__name__", "check"), False, f"failed: {exc}"
            details[name] = {"ok": ok, "detail": detail}
            ready = ready and ok
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
    if admin is not None:
        from agent.http.api import add_api_routes
        from agent.http.dashboard import add_dashboard_routes

        add_api_routes(app, admin)
        add_dashboard_routes(app, admin)
    return app
