"""Routes: /healthz (process up), /readyz (every component ready, with details), /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from agent.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger(__name__)

# A readiness check: name, ok, detail. Optional components report ok=True with their state.
ReadinessCheck = Callable[[], Awaitable[tuple[str, bool, str]]]


def build_http_app(
    metrics: Metrics, checks: Sequence[ReadinessCheck], *, check_timeout: float = 2.0
) -> web.Application:
    app = web.Application()

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
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app
