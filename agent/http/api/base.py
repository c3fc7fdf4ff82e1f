"""What every API resource module shares: the endpoint record, the call a handler gets, the
error body, and the id parser that answers 400 instead of 500.

May: describe endpoints. Must not: hold handlers (each resource module holds its own).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

from agent.admin.audit import Actor
from agent.errors import BadRequest
from agent.http.context import AdminContext
from agent.tokens.roles import Permission
from agent.tokens.service import Principal

PREFIX = "/api/v1"


class ErrorOut(BaseModel):
    error: str


@dataclass(frozen=True)
class Call:
    request: web.Request
    principal: Principal
    actor: Actor
    body: BaseModel | None


Answer = BaseModel | web.StreamResponse


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permission: Permission
    summary: str
    response: type[BaseModel] | None  # None: a stream (audio)
    handler: Callable[[AdminContext, Call], Awaitable[Answer]]
    body: type[BaseModel] | None = None
    query: tuple[str, ...] = ()


def parse_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"not an id: {text[:20]!r}") from None
