"""SMS providers: one HTTP request per message, and what its answer means for the outbox.

Adapters only: build the request the provider documents, send it, classify the answer as
sent, retry (429 with its Retry-After, 5xx, 408, a timeout or a connection failure) or failed
(any other 4xx: retrying would not help). The secret is read from its file at each send, so a
rotated token is picked up without a restart. Must not log, nor put in a result, the
destination or the text: a provider's error message may quote the number, so only the HTTP
status and the provider's numeric error code are kept.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, urlencode

import aiohttp

from agent.contact.config import HttpProvider, SmsSection, TwilioProvider
from agent.contact.templates import fill_body

Outcome = Literal["sent", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    detail: str  # "HTTP 429", "timeout", "HTTP 400 code 21211": never a number or a text
    retry_after: float | None = None  # seconds the provider asked us to wait
    provider_ref: str | None = None


class SmsProvider(Protocol):
    name: str

    async def send(
        self, session: aiohttp.ClientSession, to: str, sender: str, text: str
    ) -> SendResult: ...


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number of seconds, or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = type(exc).__name__
        raise SecretUnreadable(f"cannot read the secret file {path}: {why}") from None


class SecretUnreadable(Exception):
    """The provider's secret file is missing or unreadable (an admin can fix it: retry)."""


async def _post(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> SendResult:
    try:
        async with session.post(url, data=data, headers=headers) as resp:
            raw = await resp.read()
            status = resp.status
            wait = retry_after_seconds(resp.headers.get("Retry-After"))
    except TimeoutError:
        return SendResult("retry", "timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return SendResult("retry", f"connection failed ({type(exc).__name__})")
    if 200 <= status < 300:
        return SendResult("sent", f"HTTP {status}", provider_ref=_reference(raw))
    detail = f"HTTP {status}" + _code(raw)
    if status == 429 or status == 408 or status >= 500:
        return SendResult("retry", detail, retry_after=wait)
    return SendResult("failed", detail)


def _json(raw: bytes) -> dict[str, object]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _reference(raw: bytes) -> str | None:
    found = _json(raw)
    for key in ("sid", "id", "message_id", "messageId"):
        value = found.get(key)
        if isinstance(value, str | int) and len(str(value)) <= 64:
            return str(value)
    return None


def _code(raw: bytes) -> str:
    code = _json(raw).get("code")
    return f" code {code}" if isinstance(code, int) else ""


class TwilioSms:
    """Twilio Programmable Messaging: POST {base}/2010-04-01/Accounts/{sid}/Messages.json,
    form fields To, Body and From (or MessagingServiceSid), HTTP Basic with the account SID
    and the auth token; 201 Created with the message's ``sid``."""

    name = "twilio"

    def __init__(self, cfg: TwilioProvider) -> None:
        self._cfg = cfg

    async def send(
        self, session: aiohttp.ClientSession, to: str, sender: str, text: str
    ) -> SendResult:
        try:
            token = _read_secret(self._cfg.auth_token_file)
        except SecretUnreadable as exc:
            return SendResult("retry", str(exc))
        fields = {"To": to, "Body": text}
        if self._cfg.messaging_service_sid:
            fields["MessagingServiceSid"] = self._cfg.messaging_service_sid
        else:
            fields["From"] = sender
        sid = self._cfg.account_sid
        url = f"{self._cfg.base_url.rstrip('/')}/2010-04-01/Accounts/{quote(sid)}/Messages.json"
        basic = base64.b64encode(f"{sid}:{token}".encode()).decode("ascii")
        headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        return await _post(session, url, urlencode(fields).encode(), headers)


class HttpSms:
    """A generic HTTP gateway: the configured URL, secret and body template."""

    name = "http"

    def __init__(self, cfg: HttpProvider) -> None:
        self._cfg = cfg

    async def send(
        self, session: aiohttp.ClientSession, to: str, sender: str, text: str
    ) -> SendResult:
        cfg = self._cfg
        headers: dict[str, str] = {"Content-Type": cfg.content_type}
        if cfg.auth != "none":
            assert cfg.auth_file is not None  # the config check requires it
            try:
                secret = _read_secret(cfg.auth_file)
            except SecretUnreadable as exc:
                return SendResult("retry", str(exc))
            if cfg.auth == "bearer":
                headers[cfg.auth_header] = f"Bearer {secret}"
            elif cfg.auth == "basic":
                basic = base64.b64encode(secret.encode()).decode("ascii")
                headers[cfg.auth_header] = f"Basic {basic}"
            else:
                headers[cfg.auth_header] = secret
        body = fill_body(cfg.body, cfg.content_type, to=to, sender=sender, body=text)
        return await _post(session, cfg.url, body.encode(), headers)


def provider_for(section: SmsSection) -> SmsProvider:
    if section.provider == "twilio":
        assert section.twilio is not None
        return TwilioSms(section.twilio)
    assert section.http is not None
    return HttpSms(section.http)
