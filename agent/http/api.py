"""The JSON API under /api/v1/: every body is a pydantic model, and /api/v1/openapi.json is
generated from the same endpoint table the routes are built from (so it cannot drift).

Authentication is ``Authorization: Bearer <token>``: 401 without a valid token, 403 when the
token's role lacks the endpoint's permission. May: parse and answer HTTP, call AdminActions,
the read-only views and services' read methods. Must not: decide policy, return a patient's
full number (list entries are masked and named by handle; a report against a number that is
not ours answers it masked), or run a loop over many rows on the event loop (stats aggregate
in a thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, BinaryIO, Literal, cast

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema

from agent.admin.actions import shown_entry
from agent.admin.audit import Actor
from agent.errors import BadRequest
from agent.http.context import AdminContext
from agent.http.figures import pool_figures
from agent.http.security import actor_of, bearer_principal, may
from agent.outbound.policy import local_day
from agent.outcomes.repo import OutcomeRepo
from agent.outcomes.stats import aggregate
from agent.phone import mask
from agent.tokens.roles import Permission
from agent.tokens.service import Principal

PREFIX = "/api/v1"
MAX_STATS_DAYS = 92


# -- models ---------------------------------------------------------------------------------
class ErrorOut(BaseModel):
    error: str


class NumberOut(BaseModel):
    number: str = Field(description="one of our caller IDs, E.164")
    name: str
    pool: str = Field(description="the pool it serves now (a promoted reserve number: that pool)")
    state: str
    until: float | None = Field(None, description="end of a rest or quarantine (UTC epoch)")
    used: int
    cap: int


class NumbersOut(BaseModel):
    numbers: list[NumberOut]


class PoolOut(BaseModel):
    name: str
    reserve: bool
    purposes: list[str]
    on_exhausted: str
    numbers: int
    usable: int = Field(description="numbers that can be handed out now")
    used_today: int
    capacity_today: int = Field(description="sum of today's caps of numbers in service")
    answer_rate_today: float | None
    answer_rate_7_days: float | None = Field(description="the 7 days before today")
    open_alerts: int


class PoolsOut(BaseModel):
    pools: list[PoolOut]


class StatsRowOut(BaseModel):
    day: str
    pool: str
    number: str | None
    dialled: int
    answered: int
    busy: int
    no_answer: int
    failed: int
    unseen: int
    talk_seconds: int
    answer_rate: float | None


class StatsOut(BaseModel):
    stats: list[StatsRowOut]


class AlertOut(BaseModel):
    id: int
    kind: str
    subject: str
    severity: str
    message: str
    first_seen: float
    last_seen: float
    resolved_at: float | None
    acked_at: float | None


class AlertsOut(BaseModel):
    alerts: list[AlertOut]


class AckOut(BaseModel):
    id: int
    acked: bool = Field(description="false when no such alert exists")


class ReportIn(BaseModel):
    number: str = Field(max_length=40, description="the caller ID reported, as the patient gave it")
    source: str = Field("api", max_length=40, description="where the report came from")
    id: str | None = Field(
        None,
        max_length=100,
        description="idempotency key: a report sent again with the same id counts once",
    )


class ReportOut(BaseModel):
    number: str = Field(description="E.164 when ours; masked (never a stranger's number) otherwise")
    ours: bool
    reports_today: int
    quarantined: bool
    duplicate: bool


class ReinstateOut(BaseModel):
    number: str
    reinstated: bool = Field(description="false when it was neither quarantined nor resting")
    state: str


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


class AuditEntryOut(BaseModel):
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class AuditOut(BaseModel):
    entries: list[AuditEntryOut]


class TokenOut(BaseModel):
    id: int
    name: str
    role: str
    state: Literal["live", "expired", "revoked"]
    created_at: float
    expires_at: float | None
    last_used_at: float | None


class TokensOut(BaseModel):
    tokens: list[TokenOut]


class TokenCreateIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["viewer", "operator", "auditor", "admin"]
    expires_days: float | None = Field(None, gt=0, le=3650)


class TokenCreatedOut(BaseModel):
    token: TokenOut
    secret: str = Field(description="shown once; only its hash is stored")


class RevokeOut(BaseModel):
    name: str
    revoked: bool


class AnnounceIn(BaseModel):
    purpose: str = Field(max_length=32)
    callee: str = Field(max_length=40, description="the patient's number (never stored in clear)")
    case_ref: str | None = Field(None, pattern=r"^[A-Za-z0-9._:/-]{1,64}$")
    at: float | None = Field(None, description="planned call time (UTC epoch); default now")
    area: str | None = Field(None, max_length=5, description="postal code or département")
    sms: bool = Field(False, description="queue the purpose's pre-call SMS")


class AnnounceOut(BaseModel):
    pool: str
    number: str = Field(description="the pinned caller ID the call will present")
    name: str
    expires_at: float
    sms_at: float | None
    reused: bool = Field(description="an open pin for this callee and purpose already existed")


# -- endpoint table -------------------------------------------------------------------------
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


async def _numbers(ctx: AdminContext, call: Call) -> NumbersOut:
    pools = await pool_figures(ctx)
    return NumbersOut(
        numbers=[
            NumberOut(
                number=n.number, name=n.name, pool=n.pool, state=n.state, until=n.until,
                used=n.used, cap=n.cap,
            )
            for p in pools
            for n in p.numbers
        ]
    )  # fmt: skip


async def _pools(ctx: AdminContext, call: Call) -> PoolsOut:
    out = []
    for p in await pool_figures(ctx, with_numbers=False):
        out.append(
            PoolOut(
                name=p.name, reserve=p.reserve, purposes=list(p.purposes),
                on_exhausted=p.on_exhausted, numbers=p.total, usable=p.usable,
                used_today=p.used_today, capacity_today=p.capacity_today,
                answer_rate_today=_round(p.today.answer_rate),
                answer_rate_7_days=_round(p.week.answer_rate), open_alerts=p.open_alerts,
            )
        )  # fmt: skip
    return PoolsOut(pools=out)


def _round(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 4)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: expected YYYY-MM-DD") from None


async def _stats(ctx: AdminContext, call: Call) -> StatsOut:
    """The figures of `trustline stats`: the same repository query and the same aggregate."""
    q = call.request.query
    pool = q.get("pool") or None
    by_number = q.get("by_number", "").lower() in ("1", "true", "yes")
    if q.get("from"):
        first = _day(q["from"], "from")
        last = _day(q["to"], "to") if q.get("to") else first
    else:
        try:
            days = int(q.get("days", "7"))
        except ValueError:
            raise BadRequest("days: expected a whole number") from None
        if days < 1:
            raise BadRequest("days: must be at least 1")
        last = _day(q["to"], "to") if q.get("to") else local_day(ctx.clock.now(), ctx.zone())
        first = last - timedelta(days=days - 1)
    if last < first:
        raise BadRequest("to is before from")
    if (last - first).days >= MAX_STATS_DAYS:
        raise BadRequest(f"at most {MAX_STATS_DAYS} days at once")
    since = _epoch(first - timedelta(days=1))
    until = _epoch(last + timedelta(days=2))
    rows = await OutcomeRepo(ctx.read_db).outcomes(since, until, pool)
    config = ctx.config()
    zones = {name: p.rules.timezone for name, p in config.pools.items()}
    default = ctx.zone()
    stats = await asyncio.to_thread(
        aggregate,
        rows,
        lambda name: zones.get(name, default),
        by_number=by_number,
        first=first,
        last=last,
    )
    return StatsOut(stats=[StatsRowOut.model_validate(s.as_dict()) for s in stats])


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


async def _alerts(ctx: AdminContext, call: Call) -> AlertsOut:
    open_only = call.request.query.get("open", "").lower() in ("1", "true", "yes")
    incidents = await ctx.actions.alerts().incidents(open_only=open_only)
    return AlertsOut(
        alerts=[
            AlertOut(
                id=i.id, kind=i.kind, subject=i.subject, severity=i.severity,
                message=str(i.payload.get("message", "")), first_seen=i.first_seen,
                last_seen=i.last_seen, resolved_at=i.resolved_at, acked_at=i.acked_at,
            )
            for i in incidents[:500]
        ]
    )  # fmt: skip


async def _ack(ctx: AdminContext, call: Call) -> AckOut:
    incident_id = _int(call.request.match_info["id"])
    return AckOut(id=incident_id, acked=await ctx.actions.ack(call.actor, incident_id))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"not an id: {text[:20]!r}") from None


async def _report(ctx: AdminContext, call: Call) -> ReportOut:
    body = cast(ReportIn, call.body)
    result = await ctx.actions.report_spam(call.actor, body.number, body.source, body.id)
    return ReportOut(
        number=result.number,
        ours=result.ours,
        reports_today=result.reports_today,
        quarantined=result.quarantined,
        duplicate=result.duplicate,
    )


async def _announce(ctx: AdminContext, call: Call) -> AnnounceOut:
    body = cast(AnnounceIn, call.body)
    if ctx.contact is None:
        raise BadRequest("patient contact is not running on this agent")
    pinned = await ctx.contact.announce(
        body.purpose, body.callee, case_ref=body.case_ref, at=body.at, sms=body.sms, area=body.area
    )
    await ctx.actions.audit.record(
        call.actor, "announce", pinned.number, purpose=body.purpose, sms=body.sms,
        callee=mask(body.callee),
    )  # fmt: skip
    return AnnounceOut(
        pool=pinned.pool, number=pinned.number, name=pinned.name, expires_at=pinned.expires_at,
        sms_at=pinned.sms_at, reused=pinned.reused,
    )  # fmt: skip


async def _reinstate(ctx: AdminContext, call: Call) -> ReinstateOut:
    number, changed = await ctx.actions.reinstate(call.actor, call.request.match_info["number"])
    rows = ctx.actions.outbound().number_rows()
    state = next((str(r["state"]) for r in rows if r["number"] == number), "unknown")
    return ReinstateOut(number=number, reinstated=changed, state=state)


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


async def _list(ctx: AdminContext, call: Call) -> ListOut:
    return await list_entries(ctx, _kind(call))


async def _list_add(ctx: AdminContext, call: Call) -> ListEditOut:
    body = cast(ListAddIn, call.body)
    edit = await ctx.actions.list_add(call.actor, _kind(call), body.entry, body.note)
    return ListEditOut(kind=edit.kind, id=edit.handle, entry=edit.shown, changed=edit.changed)


async def _list_remove(ctx: AdminContext, call: Call) -> ListEditOut:
    kind = _kind(call)
    edit = await ctx.actions.list_remove(call.actor, kind, call.request.match_info["id"])
    return ListEditOut(kind=edit.kind, id=edit.handle, entry=edit.shown, changed=edit.changed)


async def _recordings(ctx: AdminContext, call: Call) -> RecordingsOut:
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


async def _verify(ctx: AdminContext, call: Call) -> VerifyOut:
    recording_id = _int(call.request.match_info["id"])
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


async def _decrypt(ctx: AdminContext, call: Call) -> web.StreamResponse:
    body = cast(DecryptIn, call.body)
    recording_id = _int(call.request.match_info["id"])
    return await stream_decrypt(ctx, call.request, call.actor, recording_id, body.reason)


async def _audit(ctx: AdminContext, call: Call) -> AuditOut:
    try:
        since = float(call.request.query.get("since", "0"))
    except ValueError:
        raise BadRequest("since: UTC epoch seconds") from None
    rows = await ctx.actions.audit.entries(since=since, limit=5000)
    return AuditOut(
        entries=[
            AuditEntryOut(at=r.at, actor=r.actor, action=r.action, target=r.target, detail=r.detail)
            for r in rows
        ]
    )


def _token_out(ctx: AdminContext, r: Any) -> TokenOut:
    now = ctx.clock.now()
    state = "revoked" if r.revoked_at is not None else ("live" if r.live(now) else "expired")
    return TokenOut(
        id=r.id, name=r.name, role=r.role, state=state, created_at=r.created_at,
        expires_at=r.expires_at, last_used_at=r.last_used_at,
    )  # fmt: skip


async def _tokens(ctx: AdminContext, call: Call) -> TokensOut:
    return TokensOut(tokens=[_token_out(ctx, r) for r in await ctx.actions.tokens.listing()])


async def _token_create(ctx: AdminContext, call: Call) -> TokenCreatedOut:
    body = cast(TokenCreateIn, call.body)
    row, secret = await ctx.actions.token_create(
        call.actor, body.name, body.role, body.expires_days
    )
    return TokenCreatedOut(token=_token_out(ctx, row), secret=secret)


async def _token_revoke(ctx: AdminContext, call: Call) -> RevokeOut:
    name = call.request.match_info["name"]
    return RevokeOut(name=name, revoked=await ctx.actions.token_revoke(call.actor, name))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/numbers", "read", "Numbers: state, used today / cap", NumbersOut, _numbers),
    Endpoint("GET", "/pools", "read", "Pools with capacity and answer rates", PoolsOut, _pools),
    Endpoint(
        "GET", "/stats", "read", "Answer rates per day, as `trustline stats`", StatsOut, _stats,
        query=("days", "from", "to", "pool", "by_number"),
    ),
    Endpoint("GET", "/alerts", "read", "Alert incidents", AlertsOut, _alerts, query=("open",)),
    Endpoint("POST", "/alerts/{id}/ack", "act", "Acknowledge an alert", AckOut, _ack),
    Endpoint("POST", "/reports", "act", "Report spam against a caller ID", ReportOut, _report,
             body=ReportIn),
    Endpoint("POST", "/announce", "act",
             "Pin the caller ID of a coming call to its callee; optionally queue the SMS",
             AnnounceOut, _announce, body=AnnounceIn),
    Endpoint("POST", "/numbers/{number}/reinstate", "act", "End a quarantine or rest now",
             ReinstateOut, _reinstate),
    Endpoint("GET", "/screening/lists/{kind}", "read", "A block or allow list", ListOut, _list),
    Endpoint("POST", "/screening/lists/{kind}", "act", "Add to a block or allow list",
             ListEditOut, _list_add, body=ListAddIn),
    Endpoint("DELETE", "/screening/lists/{kind}/{id}", "act", "Remove a list entry by id",
             ListEditOut, _list_remove),
    Endpoint("GET", "/recordings", "recordings", "Sealed recordings", RecordingsOut, _recordings),
    Endpoint("POST", "/recordings/{id}/verify", "recordings", "Authenticate one recording",
             VerifyOut, _verify),
    Endpoint("POST", "/recordings/{id}/decrypt", "recordings",
             "Stream one recording's audio (audited, with a reason)", None, _decrypt,
             body=DecryptIn),
    Endpoint("GET", "/audit", "audit", "Export the admin audit", AuditOut, _audit,
             query=("since",)),
    Endpoint("GET", "/tokens", "tokens", "Tokens (no secrets)", TokensOut, _tokens),
    Endpoint("POST", "/tokens", "tokens", "Create a token (the secret is shown once)",
             TokenCreatedOut, _token_create, body=TokenCreateIn),
    Endpoint("POST", "/tokens/{name}/revoke", "tokens", "Revoke a name's live token", RevokeOut,
             _token_revoke),
)  # fmt: skip


# -- HTTP plumbing --------------------------------------------------------------------------
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


def openapi() -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorOut}
    for ep in ENDPOINTS:
        models |= {m for m in (ep.body, ep.response) if m is not None}
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schema = models_json_schema(
        [(m, "validation" if m.__name__.endswith("In") else "serialization") for m in ordered],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for ep in ENDPOINTS:
        ok: dict[str, Any] = (
            {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}}
            if ep.response is None
            else {
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{ep.response.__name__}"}
                    }
                }
            }
        )
        op: dict[str, Any] = {
            "summary": ep.summary,
            "description": f"Needs a token whose role has the {ep.permission!r} permission.",
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", **ok},
                "400": {"description": "Bad request", "content": error},
                "401": {"description": "No valid token", "content": error},
                "403": {"description": "The token's role may not do this", "content": error},
            },
        }
        params = [
            {"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for p in ep.path.split("/")
            if p.startswith("{")
        ] + [{"name": q, "in": "query", "schema": {"type": "string"}} for q in ep.query]
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{ep.body.__name__}"}
                    }
                },
            }
        paths.setdefault(PREFIX + ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Trustline admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def add_api_routes(app: web.Application, ctx: AdminContext) -> None:
    spec = openapi()

    async def openapi_view(_: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get(PREFIX + "/openapi.json", openapi_view)
    for ep in ENDPOINTS:
        app.router.add_route(ep.method, PREFIX + ep.path, _wrap(ctx, ep))

    async def not_found(_: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such API endpoint (see /api/v1/openapi.json)")

    app.router.add_route("*", PREFIX + "/{tail:.*}", not_found)
