"""The JSON API under /api/v1/: every body is a pydantic model, and /api/v1/openapi.json is
generated from the same endpoint table the routes are built from (so it cannot drift).

One module per resource (numbers, pools, stats, alerts, contact, screening, recordings,
admin: audit and tokens) holds its models and handlers; ``base`` what they share; ``spec``
the endpoint table and the OpenAPI document; this module the HTTP plumbing.

Authentication is ``Authorization: Bearer <token>``: 401 without a valid token, 403 when the
token's role lacks the endpoint's permission. May: parse and answer HTTP, call AdminActions,
the read-only views and services' read methods. Must not: decide policy, return a patient's
full number (list entries are masked and named by handle; a report against a number that is
not ours answers it masked), or run a loop over many rows on the event loop (stats aggregate
in a thread).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from agent.errors import BadRequest
from agent.http.api.base import PREFIX, Call, Endpoint
from agent.http.api.recordings import stream_decrypt
from agent.http.api.screening import list_entries
from agent.http.api.spec import ENDPOINTS, openapi
from agent.http.context import AdminContext
from agent.http.security import actor_of, bearer_principal, may

__all__ = ["ENDPOINTS", "PREFIX", "add_api_routes", "list_entries", "openapi", "stream_decrypt"]


def _wrap(
    ctx: AdminContext, ep: Endpoint
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        principal = await bearer_principal(request, ctx.actions.tokens)
        if principal is None:
            raise web.HTTPUnauthorized(
                text="a valid token is needed: Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="trustline"'},
            )
        if not may(principal, ep.permission):
            raise web.HTTPForbidden(text=f"the {principal.role} role may not do this")
        body: BaseModel | None = None
        if ep.body is not None:
            raw = await request.read()
            try:
                body = ep.body.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                    for e in exc.errors()
                )
                raise BadRequest(f"invalid body: {problems}") from None
        answer = await ep.handler(ctx, Call(request, principal, actor_of(principal, request), body))
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.Response(body=answer.model_dump_json(), content_type="application/json")

    return handler


def add_api_routes(app: web.Application, ctx: AdminContext) -> None:
    spec: dict[str, Any] = {}  # made on the first request: pydantic's schemas take ~0.1 s

    async def openapi_view(_: web.Request) -> web.Response:
        if not spec:
            spec.update(openapi())
        return web.json_response(spec)

    app.router.add_get(PREFIX + "/openapi.json", openapi_view)
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, PREFIX + ep.path, _wrap(ctx, ep))

    async def not_found(_: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such API endpoint (see /api/v1/openapi.json)")

    app.router.add_route("*", PREFIX + "/{tail:.*}", not_found)
