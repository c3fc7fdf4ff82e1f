"""/recordings: the sealed recordings, verifying one, and streaming one's audio (audited,
with a reason; shared with the dashboard). Decryption runs in a thread that writes to the
response with back-pressure."""

from __future__ import annotations

import asyncio
import threading
from typing import BinaryIO, cast

from aiohttp import web
from pydantic import BaseModel, Field

from agent.admin.audit import Actor
from agent.errors import BadRequest
from agent.http.api.base import Call, parse_id
from agent.http.context import AdminContext


class RecordingOut(BaseModel):
    id: int
    uniqueid: str | None
    recorded_at: float
    sealed_at: float
    plain_size: int
    size: int
    key_id: str
    state: str


class RecordingsOut(BaseModel):
    recordings: list[RecordingOut]


class VerifyOut(BaseModel):
    id: int
    ok: bool
    problem: str | None


class DecryptIn(BaseModel):
    reason: str = Field(min_length=1, max_length=200, description="why (audited)")


async def recordings(ctx: AdminContext, call: Call) -> RecordingsOut:
    rows = await ctx.actions.recordings().listing(limit=500)
    return RecordingsOut(
        recordings=[
            RecordingOut(
                id=r.id, uniqueid=r.uniqueid, recorded_at=r.recorded_at, sealed_at=r.sealed_at,
                plain_size=r.plain_size, size=r.size, key_id=r.key_id, state=r.state,
            )
            for r in rows
        ]
    )  # fmt: skip


async def verify(ctx: AdminContext, call: Call) -> VerifyOut:
    recording_id = parse_id(call.request.match_info["id"])
    [result] = await ctx.actions.recordings().verify([recording_id])
    problem = None if result.problem is None else result.problem.split(": ")[-1]
    return VerifyOut(id=recording_id, ok=result.problem is None, problem=problem)


class _ResponseSink:
    """A file-like the decryption thread writes to: each write is sent on the event loop and
    waited for (back-pressure); a client gone away is a BrokenPipeError, as for a player."""

    def __init__(self, response: web.StreamResponse, loop: asyncio.AbstractEventLoop) -> None:
        self._response = response
        self._loop = loop

    def write(self, data: bytes) -> int:
        future = asyncio.run_coroutine_threadsafe(self._response.write(bytes(data)), self._loop)
        try:
            future.result()
        except (ConnectionError, RuntimeError) as exc:
            raise BrokenPipeError(str(exc)) from None
        return len(data)

    def flush(self) -> None:
        return None


async def stream_decrypt(
    ctx: AdminContext, request: web.Request, actor: Actor, recording_id: int, reason: str
) -> web.StreamResponse:
    if not reason.strip():
        raise BadRequest("decrypting needs a reason")
    row = await ctx.actions.recordings().get(recording_id)  # a bad id answers 400, not audio
    if row.state != "sealed":
        raise BadRequest(f"recording {recording_id} is {row.state}")
    response = web.StreamResponse(
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="recording-{row.id}.wav"',
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    stop = threading.Event()
    sink = _ResponseSink(response, asyncio.get_running_loop())
    try:
        await ctx.actions.decrypt(actor, recording_id, cast(BinaryIO, sink), reason, stop)
    except asyncio.CancelledError:
        stop.set()
        raise
    except Exception:
        # Headers are sent: cut the stream short; the recordings audit says how it ended.
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def decrypt(ctx: AdminContext, call: Call) -> web.StreamResponse:
    body = cast(DecryptIn, call.body)
    recording_id = parse_id(call.request.match_info["id"])
    return await stream_decrypt(ctx, call.request, call.actor, recording_id, body.reason)
