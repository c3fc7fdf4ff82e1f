"""/screening/lists/{kind}: the block and allow lists. Entries are named by handle and a
number is shown masked to its last 4 digits (shared with the dashboard)."""

from __future__ import annotations

from typing import Literal, cast

from aiohttp import web
from pydantic import BaseModel, Field

from agent.admin.actions import shown_entry
from agent.http.api.base import Call
from agent.http.context import AdminContext


class ListEntryOut(BaseModel):
    id: str | None = Field(description="handle to remove it (None: from pools.toml)")
    entry: str = Field(description="a prefix (+44*) whole; a number masked to its last 4 digits")
    source: Literal["store", "pools.toml"]
    added_at: float | None
    note: str


class ListOut(BaseModel):
    kind: Literal["allow", "block"]
    entries: list[ListEntryOut]


class ListAddIn(BaseModel):
    entry: str = Field(max_length=40, description="+33612345678 or a prefix such as +44*")
    note: str = Field("", max_length=200, description="why (no health data)")


class ListEditOut(BaseModel):
    kind: str
    id: str
    entry: str
    changed: bool


def _kind(call: Call) -> Literal["allow", "block"]:
    kind = call.request.match_info["kind"]
    if kind not in ("allow", "block"):
        raise web.HTTPNotFound(text="no such list (allow or block)")
    return cast(Literal["allow", "block"], kind)


async def list_entries(ctx: AdminContext, kind: Literal["allow", "block"]) -> ListOut:
    service = ctx.actions.screening()
    entries = [
        ListEntryOut(id=None, entry=shown_entry(e), source="pools.toml", added_at=None, note="")
        for e in service.static_entries(kind)
    ]
    for item in await service.entries(kind):
        entries.append(
            ListEntryOut(
                id=ctx.actions.handle(kind, item.entry), entry=shown_entry(item.entry),
                source="store", added_at=item.added_at, note=item.note,
            )
        )  # fmt: skip
    return ListOut(kind=kind, entries=entries)


async def show(ctx: AdminContext, call: Call) -> ListOut:
    return await list_entries(ctx, _kind(call))


async def add(ctx: AdminContext, call: Call) -> ListEditOut:
    body = cast(ListAddIn, call.body)
    edit = await ctx.actions.list_add(call.actor, _kind(call), body.entry, body.note)
    return ListEditOut(kind=edit.kind, id=edit.handle, entry=edit.shown, changed=edit.changed)


async def remove(ctx: AdminContext, call: Call) -> ListEditOut:
    kind = _kind(call)
    edit = await ctx.actions.list_remove(call.actor, kind, call.request.match_info["id"])
    return ListEditOut(kind=edit.kind, id=edit.handle, entry=edit.shown, changed=edit.changed)
