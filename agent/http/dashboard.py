"""The dashboard: server-rendered pages (Jinja2, autoescaped) for pools, numbers, alerts,
screening and recordings, with a form for each action an operator or auditor takes.

Sign-in trades a token for a session cookie (HttpOnly, SameSite=Strict, Secure over TLS);
every form carries the session's CSRF token and a POST without it is refused (403). The
sign-in form itself is protected by a double-submit cookie. May: render pages from the
shared figures, the read-only views and AdminActions. Must not: show a patient's number
(list entries masked, recordings listed without file names), run a loop over call rows, or
offer an action the viewer's role may not take.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.admin.views import Counts, day_bounds, hour_bounds, merged
from agent.clock import utc
from agent.http.api import list_entries, stream_decrypt
from agent.http.context import AdminContext
from agent.http.figures import PoolFigures, pool_figures, rate_text
from agent.http.plots import rate_svg
from agent.http.security import (
    PRESIGN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    actor_of,
    csrf_ok,
    may,
)
from agent.outbound.policy import local_day
from agent.tokens.roles import Permission
from agent.tokens.service import Principal

if TYPE_CHECKING:
    import jinja2

PLOT_DAYS = 30
SCREENING_DAYS = 14


@cache
def _templates() -> jinja2.Environment:
    """The pages' templates, made on the first page shown: an agent nobody looks at never
    loads Jinja2 (~2 MB)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("agent.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["rate"] = rate_text
    return env


def _when(ts: float | None) -> str:
    return "-" if ts is None else utc(ts).strftime("%Y-%m-%d %H:%MZ")


@dataclass(frozen=True)
class Visit:
    request: web.Request
    principal: Principal
    session: Session


async def render(name: str, **values: Any) -> web.Response:
    """Rendering a 500-row page is pure Python: it runs in a thread, so calls arriving
    meanwhile are not held behind it (the agent's short GIL switch interval lets them in)."""
    body = await asyncio.to_thread(_templates().get_template(name).render, **values)
    return web.Response(text=body, content_type="text/html")


def _cookie_flags(request: web.Request) -> dict[str, Any]:
    return {"httponly": True, "samesite": "Strict", "secure": request.secure, "path": "/"}


class Dashboard:
    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    # -- sessions ------------------------------------------------------------------------
    async def visit(self, request: web.Request) -> Visit | None:
        sid = request.cookies.get(SESSION_COOKIE)
        session = self.ctx.sessions.get(sid)
        if session is None:
            return None
        principal = await self.ctx.actions.tokens.by_id(session.token_id)
        if principal is None:  # revoked or expired since sign-in
            self.ctx.sessions.close(sid)
            return None
        return Visit(request, principal, session)

    def page(
        self,
        permission: Permission | None,
        view: Callable[[Visit], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            visit = await self.visit(request)
            if visit is None:
                if request.method == "GET":
                    raise web.HTTPSeeOther("/")
                raise web.HTTPUnauthorized(text="sign in first")
            if request.method == "POST":
                form = await request.post()
                if not csrf_ok(visit.session.csrf, form.get("csrf")):
                    raise web.HTTPForbidden(text="this form is stale or forged (CSRF check)")
            if permission is not None and not may(visit.principal, permission):
                raise web.HTTPForbidden(text=f"the {visit.principal.role} role may not see this")
            return await view(visit)

        return handler

    def values(self, visit: Visit, **more: Any) -> dict[str, Any]:
        p = visit.principal
        return {
            "me": p,
            "csrf": visit.session.csrf,
            "can_read": may(p, "read"),
            "can_act": may(p, "act"),
            "can_record": may(p, "recordings"),
            **more,
        }

    # -- sign in / out -------------------------------------------------------------------
    async def home(self, request: web.Request) -> web.StreamResponse:
        visit = await self.visit(request)
        if visit is None:
            return await self._signin_form(request, error=None)
        if not may(visit.principal, "read"):
            raise web.HTTPSeeOther("/recordings")
        return await self.overview(visit)

    async def _signin_form(self, request: web.Request, error: str | None) -> web.Response:
        presign = secrets.token_urlsafe(24)
        response = await render("signin.html", presign=presign, error=error)
        response.set_cookie(PRESIGN_COOKIE, presign, max_age=1800, **_cookie_flags(request))
        if error:
            response.set_status(401)
        return response

    async def signin(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if not csrf_ok(request.cookies.get(PRESIGN_COOKIE, ""), form.get("presign")):
            raise web.HTTPForbidden(text="the sign-in form is stale or forged (CSRF check)")
        token = form.get("token")
        principal = (
            await self.ctx.actions.tokens.authenticate(token.strip())
            if isinstance(token, str)
            else None
        )
        if principal is None:
            return await self._signin_form(
                request, error="That token is unknown, expired or revoked."
            )
        sid, _ = self.ctx.sessions.open(principal.token_id)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            SESSION_COOKIE, sid, max_age=int(SESSION_SECONDS), **_cookie_flags(request)
        )
        response.del_cookie(PRESIGN_COOKIE, path="/")
        raise response

    async def signout(self, visit: Visit) -> web.StreamResponse:
        self.ctx.sessions.close(visit.request.cookies.get(SESSION_COOKIE))
        response = web.HTTPSeeOther("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- pages ---------------------------------------------------------------------------
    async def overview(self, visit: Visit) -> web.StreamResponse:
        pools = await pool_figures(self.ctx, with_numbers=False)
        reserve = [p for p in pools if p.reserve]
        return await render(
            "overview.html",
            **self.values(
                visit,
                pools=[p for p in pools if not p.reserve],
                reserve=reserve,
                open_alerts=len(await self.ctx.actions.alerts().incidents(open_only=True)),
            ),
        )

    async def _plot(
        self, pool: str, *, number: str | None
    ) -> tuple[list[str], list[Counts], Counts]:
        zone = self.ctx.zone(pool)
        today = local_day(self.ctx.clock.now(), zone)
        first = today - timedelta(days=PLOT_DAYS - 1)
        bounds = day_bounds(zone, first, PLOT_DAYS)
        buckets = await self.ctx.views.recent_buckets(
            bounds, pools=None if number else [pool], number=number
        )
        days = merged(buckets)
        days += [Counts() for _ in range(PLOT_DAYS - len(days))]
        labels = [(first + timedelta(days=i)).strftime("%m-%d") for i in range(PLOT_DAYS)]
        total = Counts()
        for c in days:
            total.add(c)
        return labels, days, total

    async def pool(self, visit: Visit) -> web.StreamResponse:
        name = visit.request.match_info["name"]
        found: PoolFigures | None = next(
            (p for p in await pool_figures(self.ctx) if p.name == name), None
        )
        if found is None:
            raise web.HTTPNotFound(text=f"no pool named {name!r}")
        labels, days, total = await self._plot(name, number=None)
        plot = rate_svg(labels, days, title=f"answer rate of pool {name}, last {PLOT_DAYS} days")
        return await render(
            "pool.html", **self.values(visit, pool=found, plot=plot, total=total, days=PLOT_DAYS)
        )

    async def number(self, visit: Visit) -> web.StreamResponse:
        number = visit.request.match_info["number"]
        line = next(
            (n for p in await pool_figures(self.ctx) for n in p.numbers if n.number == number),
            None,
        )
        if line is None:
            raise web.HTTPNotFound(text="not one of our numbers")
        labels, days, total = await self._plot(line.pool, number=number)
        plot = rate_svg(labels, days, title=f"answer rate, last {PLOT_DAYS} days")
        zone = self.ctx.zone(line.pool)
        today = local_day(self.ctx.clock.now(), zone)
        hours = hour_bounds(zone, today)
        hourly = merged(await self.ctx.views.outcome_buckets(hours, number=number))
        hourly += [Counts() for _ in range(len(hours) - 1 - len(hourly))]
        hour_labels = [datetime.fromtimestamp(b, zone).strftime("%Hh") for b in hours[:-1]]
        today_plot = rate_svg(hour_labels, hourly, title="answer rate today, per hour")
        return await render(
            "number.html",
            **self.values(
                visit,
                n=line,
                plot=plot,
                today_plot=today_plot,
                total=total,
                outcomes=sorted(total.outcomes.items(), key=lambda kv: -kv[1]),
                reports=await self.ctx.views.reports(number),
                history=await self.ctx.views.history(number),
                days=PLOT_DAYS,
            ),
        )

    async def alerts(self, visit: Visit) -> web.StreamResponse:
        incidents = await self.ctx.actions.alerts().incidents()
        return await render("alerts.html", **self.values(visit, alerts=incidents[:300]))

    async def screening(self, visit: Visit) -> web.StreamResponse:
        zone = self.ctx.zone()
        now = self.ctx.clock.now()
        today = local_day(now, zone)
        first = today - timedelta(days=SCREENING_DAYS - 1)
        verdicts = await self.ctx.views.verdicts(day_bounds(zone, first, SCREENING_DAYS))
        per_day = [
            ((first + timedelta(days=i)).isoformat(), verdicts.get(i, {}))
            for i in range(SCREENING_DAYS)
        ]
        reasons = await self.ctx.views.top_reasons(now - 7 * 86400.0)
        lists = [await list_entries(self.ctx, "block"), await list_entries(self.ctx, "allow")]
        return await render(
            "screening.html",
            **self.values(
                visit,
                per_day=per_day,
                verdict_names=("allow", "challenge", "voicemail", "block"),
                reasons=reasons,
                lists=lists,
            ),
        )

    async def recordings(self, visit: Visit) -> web.StreamResponse:
        rows = await self.ctx.actions.recordings().listing(limit=200)
        checked = visit.request.query.get("verified")
        return await render("recordings.html", **self.values(visit, rows=rows, checked=checked))

    # -- actions -------------------------------------------------------------------------
    async def reinstate(self, visit: Visit) -> web.StreamResponse:
        number = visit.request.match_info["number"]
        await self.ctx.actions.reinstate(actor_of(visit.principal, visit.request), number)
        raise web.HTTPSeeOther(f"/numbers/{number}")

    async def report(self, visit: Visit) -> web.StreamResponse:
        number = visit.request.match_info["number"]
        form = await visit.request.post()
        source = str(form.get("source") or "operator")
        await self.ctx.actions.report_spam(
            actor_of(visit.principal, visit.request), number, source, None, channel="dashboard"
        )
        raise web.HTTPSeeOther(f"/numbers/{number}")

    async def ack(self, visit: Visit) -> web.StreamResponse:
        incident_id = int(visit.request.match_info["id"])
        await self.ctx.actions.ack(actor_of(visit.principal, visit.request), incident_id)
        raise web.HTTPSeeOther("/alerts")

    async def list_add(self, visit: Visit) -> web.StreamResponse:
        form = await visit.request.post()
        await self.ctx.actions.list_add(
            actor_of(visit.principal, visit.request),
            _list_kind(visit),
            str(form.get("entry") or ""),
            str(form.get("note") or ""),
        )
        raise web.HTTPSeeOther("/screening")

    async def list_remove(self, visit: Visit) -> web.StreamResponse:
        await self.ctx.actions.list_remove(
            actor_of(visit.principal, visit.request),
            _list_kind(visit),
            visit.request.match_info["id"],
        )
        raise web.HTTPSeeOther("/screening")

    async def verify(self, visit: Visit) -> web.StreamResponse:
        recording_id = int(visit.request.match_info["id"])
        [result] = await self.ctx.actions.recordings().verify([recording_id])
        outcome = "ok" if result.problem is None else "failed"
        raise web.HTTPSeeOther(f"/recordings?verified={recording_id}-{outcome}")

    async def decrypt(self, visit: Visit) -> web.StreamResponse:
        form = await visit.request.post()
        return await stream_decrypt(
            self.ctx,
            visit.request,
            actor_of(visit.principal, visit.request),
            int(visit.request.match_info["id"]),
            str(form.get("reason") or ""),
        )


def _list_kind(visit: Visit) -> str:
    kind = visit.request.match_info["kind"]
    if kind not in ("allow", "block"):
        raise web.HTTPNotFound(text="no such list")
    return kind


def add_dashboard_routes(app: web.Application, ctx: AdminContext) -> None:
    d = Dashboard(ctx)
    r = app.router
    r.add_get("/", d.home)
    r.add_post("/signin", d.signin)
    r.add_post("/signout", d.page(None, d.signout))
    r.add_get("/pools/{name}", d.page("read", d.pool))
    r.add_get("/numbers/{number}", d.page("read", d.number))
    r.add_post("/numbers/{number}/reinstate", d.page("act", d.reinstate))
    r.add_post("/numbers/{number}/report", d.page("act", d.report))
    r.add_get("/alerts", d.page("read", d.alerts))
    r.add_post("/alerts/{id:\\d+}/ack", d.page("act", d.ack))
    r.add_get("/screening", d.page("read", d.screening))
    r.add_post("/screening/{kind}/add", d.page("act", d.list_add))
    r.add_post("/screening/{kind}/{id}/remove", d.page("act", d.list_remove))
    r.add_get("/recordings", d.page("recordings", d.recordings))
    r.add_post("/recordings/{id:\\d+}/verify", d.page("recordings", d.verify))
    r.add_post("/recordings/{id:\\d+}/decrypt", d.page("recordings", d.decrypt))
    r.add_static("/static", str(_static_dir()), show_index=False, follow_symlinks=False)


def _static_dir() -> Any:
    from importlib import resources

    return resources.files("agent.http") / "static"
