"""Security of the API and dashboard: roles on every state change, CSRF on every form,
cookie flags, tokens never stored or logged in clear, no patient number anywhere shown."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.clock import FrozenClock
from agent.http.api import ENDPOINTS
from agent.screening.service import InboundCall
from agent.tokens.roles import ROLES, Permission, allows
from agent.tokens.service import token_hash
from tests.admin_rig import PATIENT, Rig, seed_outcomes, sign_in, start_rig
from tests.conftest import AgentFactory

OUR = "+33142000002"
FILL = {"{id}": "1", "{number}": OUR, "{kind}": "block", "{name}": "viewer-user"}
BODIES = {
    "ReportIn": {"number": OUR, "source": "ivr"},
    "ListAddIn": {"entry": "+44*"},
    "DecryptIn": {"reason": "look"},
    "TokenCreateIn": {"name": "mallory", "role": "admin"},
}
# Dashboard forms: path -> permission they need.
FORMS: dict[str, Permission] = {
    f"/numbers/{OUR}/reinstate": "act",
    f"/numbers/{OUR}/report": "act",
    "/alerts/1/ack": "act",
    "/screening/block/add": "act",
    "/screening/block/abc/remove": "act",
    "/recordings/1/verify": "recordings",
    "/recordings/1/decrypt": "recordings",
}


@pytest.fixture
async def rig(make_agent: AgentFactory) -> Rig:
    return await start_rig(make_agent)


def _path(template: str) -> str:
    for key, value in FILL.items():
        template = template.replace(key, value)
    return "/api/v1" + template


async def _state(rig: Rig) -> tuple[object, ...]:
    """Everything an action could change."""
    assert rig.agent.db is not None
    counts = []
    for table in ("admin_audit", "spam_reports", "api_tokens", "screening_lists", "quarantines"):
        row = await rig.agent.db.fetchone(f"SELECT COUNT(*) FROM {table}")
        assert row is not None
        counts.append(row[0])
    revoked = await rig.agent.db.fetchone(
        "SELECT COUNT(*) FROM api_tokens WHERE revoked_at IS NOT NULL"
    )
    return (*counts, revoked[0] if revoked else None)


async def test_no_state_changing_endpoint_works_without_the_right_role(rig: Rig) -> None:
    before = await _state(rig)
    changing = [ep for ep in ENDPOINTS if ep.method != "GET"]
    assert len(changing) >= 9
    for ep in changing:
        body = BODIES.get(ep.body.__name__) if ep.body else None
        path = _path(ep.path)
        status, answer = await rig.call(ep.method, path, json=body)
        assert status == 401 and "token" in answer["error"], (ep.path, status)
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                ep.method,
                rig.base + path,
                json=body,
                headers={"Authorization": "Bearer tl_" + "x" * 43},
            ) as r,
        ):
            assert r.status == 401
        for role in ROLES:
            if not allows(role, ep.permission):
                status, answer = await rig.call(ep.method, path, role, json=body)
                assert status == 403 and role in answer["error"], (ep.path, role, status)
    assert await _state(rig) == before

    for role in ROLES:
        web = await sign_in(rig, role)
        try:
            for path, permission in FORMS.items():
                if not allows(role, permission):
                    status, page = await web.post(path, {"entry": "+44*", "reason": "x"})
                    assert status == 403, (path, role)
                    assert "Traceback" not in page
        finally:
            await web.close()
    anonymous = aiohttp.ClientSession()
    for path in FORMS:
        async with anonymous.post(rig.base + path, data={}, allow_redirects=False) as r:
            assert r.status == 401
    await anonymous.close()
    assert await _state(rig) == before


async def test_form_posts_without_the_csrf_token_are_refused(rig: Rig) -> None:
    await rig.call("POST", "/api/v1/reports", "operator", json={"number": OUR, "source": "a"})
    await rig.call("POST", "/api/v1/reports", "operator", json={"number": OUR, "source": "b"})
    web = await sign_in(rig, "operator")
    try:
        before = await _state(rig)
        for path in (f"/numbers/{OUR}/reinstate", "/screening/block/add", "/signout"):
            status, page = await web.post(path, {"entry": "+44*"}, csrf=False)
            assert status == 403 and "CSRF" in page
            status, _ = await web.post(path, {"entry": "+44*", "csrf": "forged"}, csrf=False)
            assert status == 403
        assert await _state(rig) == before
        status, _ = await web.post(f"/numbers/{OUR}/reinstate")
        assert status == 303
        _, numbers = await rig.call("GET", "/api/v1/numbers", "viewer")
        assert next(n for n in numbers["numbers"] if n["number"] == OUR)["state"] == "active"
    finally:
        await web.close()
    # The sign-in form: without the double-submit value it is refused, even with a good token.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        await s.get(rig.base + "/")
        async with s.post(
            rig.base + "/signin", data={"token": rig.tokens["admin"]}, allow_redirects=False
        ) as r:
            assert r.status == 403 and "tl_session" not in r.cookies


async def test_session_cookie_is_httponly_strict_and_ends_with_its_token(rig: Rig) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(rig.base + "/") as r:
            presign = re.search(r'name="presign" value="([^"]+)"', await r.text())
            assert presign is not None
        async with s.post(
            rig.base + "/signin",
            data={"token": rig.tokens["viewer"], "presign": presign.group(1)},
            allow_redirects=False,
        ) as r:
            cookie = r.cookies["tl_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]
            assert rig.tokens["viewer"] not in r.headers.getall("Set-Cookie", [""])[0]
        async with s.get(rig.base + "/", allow_redirects=False) as r:
            assert r.status == 200 and "viewer-user" in await r.text()
        await rig.call("POST", "/api/v1/tokens/viewer-user/revoke", "admin")
        async with s.get(rig.base + "/alerts", allow_redirects=False) as r:
            assert r.status == 303  # back to the sign-in page
        async with s.get(rig.base + "/") as r:
            assert 'id="signin"' in await r.text()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_over_tls_the_session_cookie_is_secure(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    rig = await start_rig(make_agent, http_tls_cert=str(cert), http_tls_key=str(key))
    base = rig.base.replace("http://", "https://")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(base + "/", ssl=False) as r:
            presign = re.search(r'name="presign" value="([^"]+)"', await r.text())
            assert presign is not None and r.cookies["tl_presign"]["secure"]
        async with s.post(
            base + "/signin",
            data={"token": rig.tokens["viewer"], "presign": presign.group(1)},
            allow_redirects=False,
            ssl=False,
        ) as r:
            assert r.status == 303 and r.cookies["tl_session"]["secure"]
        async with s.get(base + "/healthz", ssl=False) as r:
            assert r.status == 200


async def test_tokens_are_neither_stored_nor_logged_in_clear(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, created = await rig.call(
        "POST", "/api/v1/tokens", "admin", json={"name": "eve", "role": "viewer"}
    )
    secret = created["secret"]
    for token in (secret, rig.tokens["operator"]):
        async with (
            aiohttp.ClientSession() as s,
            s.get(rig.base + "/api/v1/pools", headers={"Authorization": f"Bearer {token}"}) as r,
        ):
            assert r.status == 200
    web = await sign_in(rig, "operator")
    await web.close()
    assert rig.agent.db is not None
    await rig.agent.db.execute("PRAGMA wal_checkpoint(FULL)")
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("trustline.sqlite3*"))
    for token in (secret, *rig.tokens.values()):
        assert token.encode() not in stored
        assert token_hash(token).encode() in stored
        assert token not in caplog.text


async def test_no_page_api_answer_or_log_line_holds_a_patient_number(
    rig: Rig, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As `trustline run` sets it up (agent.logs): aiosqlite's statement log stays off.
    caplog.set_level(logging.WARNING, logger="aiosqlite")
    agent = rig.agent
    assert agent.outbound is not None and agent.screening is not None
    await seed_outcomes(agent, clock, {OUR: "reminders"}, 5)
    await agent.outbound.decide("reminder", PATIENT, "1795344893.1")
    await agent.screening.screen(InboundCall(caller=PATIENT, dialled=OUR))
    await agent.screening.flush()
    await agent.outbound.flush()
    await rig.call("POST", "/api/v1/screening/lists/block", "operator", json={"entry": PATIENT})
    await rig.call(
        "POST", "/api/v1/screening/lists/allow", "operator", json={"entry": "0687651235"}
    )
    await rig.call("POST", "/api/v1/reports", "operator", json={"number": PATIENT, "source": "ivr"})
    status, bad = await rig.call(
        "POST", "/api/v1/screening/lists/block", "operator", json={"entry": "+336876512349999"}
    )
    await rig.call("POST", f"/api/v1/numbers/{PATIENT}/reinstate", "operator")
    bodies: list[str] = [str(bad)]
    for ep in ENDPOINTS:
        if ep.method == "GET":
            role = "admin" if ep.permission != "recordings" else "auditor"
            _, answer = await rig.call("GET", _path(ep.path), role)
            bodies.append(str(answer))
    web = await sign_in(rig, "operator")
    try:
        for path in ("/", "/pools/reminders", f"/numbers/{OUR}", "/alerts", "/screening"):
            status, page = await web.get(path)
            assert status == 200, path
            bodies.append(page)
    finally:
        await web.close()
    assert "***1234" in "".join(bodies)  # the entries are there, masked
    for text in (*bodies, caplog.text):
        for form in ("687651234", "687651235", "06 87 65 12"):
            assert form not in text


async def test_an_unexpected_failure_is_a_short_500_never_a_stack_trace(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    web = await sign_in(rig, "operator")
    assert rig.agent.read_db is not None
    # The dashboard's connection closed under it: aiosqlite raises a bare ValueError.
    await rig.agent.read_db.close()
    try:
        status, body = await rig.call("GET", "/api/v1/pools", "viewer")
        assert (status, body) == (500, {"error": "internal error (logged by the agent)"})
        status, page = await web.get("/pools/reminders")
        assert status == 500 and "<h1>500</h1>" in page
        assert "Traceback" not in page and 'File "' not in page
        assert "Traceback" in caplog.text  # the agent's log has it, for the admin
    finally:
        await web.close()
