"""Who is asking, and what they may do: bearer tokens (API), cookie sessions with CSRF
tokens (dashboard), error translation, security headers and the listener's TLS context.

May: authenticate through TokenService, keep dashboard sessions in memory (bounded; a restart
signs everyone out), turn core errors into HTTP statuses. Must not: log a token, a session id
or a CSRF token; answer with a stack trace; put a full phone number in an error message.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from agent import errors, phone
from agent.admin.audit import Actor
from agent.clock import Clock
from agent.tokens.roles import Permission, allows
from agent.tokens.service import Principal, TokenService

if TYPE_CHECKING:
    from agent.settings import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "tl_session"
PRESIGN_COOKIE = "tl_presign"  # double-submit token of the sign-in form (login CSRF)
SESSION_SECONDS = 8 * 3600.0
MAX_SESSIONS = 10_000

PRINCIPAL_KEY = web.AppKey("principal", Principal)

STATUS: tuple[tuple[type[errors.TrustlineError], int], ...] = (
    (errors.BadRequest, 400),
    (errors.BadData, 400),
    (errors.UnknownNumber, 404),
    (errors.RecordingError, 409),
    (errors.KeyringError, 503),
    (errors.StoreError, 503),
)

_DIGITS = re.compile(r"\+?\d[\d .()/-]{4,}\d")


def scrub(text: str) -> str:
    """An error message fit to return: any run of digits that could be a phone number is
    masked to its last 4 digits (messages may echo what a client sent)."""
    return _DIGITS.sub(lambda m: phone.mask(m.group(0)), text)[:300]


def status_of(exc: errors.TrustlineError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


@dataclass(slots=True)
class Session:
    token_id: int
    csrf: str
    expires_at: float


class Sessions:
    """Dashboard sessions: random id -> token id and CSRF token. Oldest evicted beyond the
    bound. Each request looks the token up again, so revoking a token ends its sessions."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def open(self, token_id: int) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token_id, secrets.token_urlsafe(32), self._clock.now() + SESSION_SECONDS)
        self._by_id[sid] = session
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._by_id.get(sid)
        if session is None:
            return None
        if session.expires_at <= self._clock.now():
            del self._by_id[sid]
            return None
        return session

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


def csrf_ok(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected, given)


async def bearer_principal(request: web.Request, tokens: TokenService) -> Principal | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return await tokens.authenticate(value.strip())


def actor_of(principal: Principal, request: web.Request) -> Actor:
    return Actor(principal.name, principal.role, request.remote or "-")


def may(principal: Principal, permission: Permission) -> bool:
    return allows(principal.role, permission)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def error_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """For the API and dashboard: core errors become their status with a short message,
    anything unexpected a bare 500 (logged here with its traceback), and the security headers
    are set. /healthz, /readyz and /metrics pass through untouched."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in ("/healthz", "/readyz", "/metrics"):
            return await handler(request)
        api = path.startswith("/api/")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                _secure(exc)
                raise
            message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
            response = _error(api, exc.status, scrub(message or exc.reason))
            for name in ("WWW-Authenticate", "Allow"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
        except errors.TrustlineError as exc:
            response = _error(api, status_of(exc), scrub(str(exc)))
        except Exception:
            log.exception("http: %s %s failed", request.method, path[:100])
            response = _error(api, 500, "internal error (logged by the agent)")
        if not response.prepared:
            _secure(response)
        return response

    return middleware


def _secure(response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _error(api: bool, status: int, message: str) -> web.Response:
    if api:
        return web.json_response({"error": message}, status=status)
    from html import escape

    body = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Trustline</title>"
        "<link rel='stylesheet' href='/static/dashboard.css'></head><body><main>"
        f"<h1>{status}</h1><p>{escape(message)}</p><p><a href='/'>Back</a></p></main></body></html>"
    )
    return web.Response(status=status, text=body, content_type="text/html")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS for the HTTP listener when TRUSTLINE_HTTP_TLS_CERT and _KEY are both set."""
    cert, key = settings.http_tls_cert, settings.http_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise errors.ConfigError(
            "environment", ["TRUSTLINE_HTTP_TLS_CERT and TRUSTLINE_HTTP_TLS_KEY go together"]
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise errors.ConfigError("environment", [f"TRUSTLINE_HTTP_TLS_CERT/KEY: {exc}"]) from None
    return context
