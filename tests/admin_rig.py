"""A running agent with tokens for each role, an HTTP client and seeded call outcomes: what
the API, dashboard and browser tests share. Outcomes are seeded as the AMI link stores them
(call_audit rows with an outcome); everything else goes through the agent's own services."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import aiohttp

from agent.app import Agent
from agent.clock import FrozenClock
from agent.tokens.service import TokenService
from tests.conftest import PARIS, AgentFactory

ROLES = ("viewer", "operator", "auditor", "admin")
# A patient: their number must never show in a page, an API answer or a log line.
PATIENT = "+33687651234"


@dataclass
class Rig:
    agent: Agent
    base: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(
        self, method: str, path: str, role: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        headers = self.auth(role) if role else {}
        async with (
            aiohttp.ClientSession() as s,
            s.request(method, self.base + path, headers=headers, **kwargs) as r,
        ):
            text = await r.text()
            try:
                body: Any = await r.json(content_type=None)
            except ValueError:
                body = text
            return r.status, body


async def start_rig(make_agent: AgentFactory, **settings: object) -> Rig:
    agent = await make_agent(**settings)
    assert agent.http_address is not None and agent.db is not None
    host, port = agent.http_address
    rig = Rig(agent, f"http://{host}:{port}")
    service = TokenService(agent.db, agent.clock)
    for role in ROLES:
        _, secret = await service.create(f"{role}-user", role, expires_days=None, created_by="test")
        rig.tokens[role] = secret
    return rig


async def seed_outcomes(
    agent: Agent, clock: FrozenClock, numbers: dict[str, str], days: int, *, seed: int = 7
) -> dict[tuple[str, str], tuple[int, int]]:
    """Calls over the last ``days`` days (Paris), skipping some days per number: returns
    {(number, ISO day): (answered, dialled)} for the days that have dialled calls."""
    assert agent.db is not None
    rng = random.Random(seed)
    today = datetime.fromtimestamp(clock.now(), PARIS).date()
    rows: list[tuple[object, ...]] = []
    truth: dict[tuple[str, str], tuple[int, int]] = {}
    uid = 0
    for number, pool in numbers.items():
        for back in range(days):
            day = today - timedelta(days=back)
            if rng.random() < 0.3:
                continue  # a day without calls: no point on the plot
            start = datetime.combine(day, time(8, 0), PARIS).timestamp()
            answered = dialled = 0
            for k in range(rng.randint(1, 6)):
                at = start + 600.0 * k
                if at > clock.now():
                    break
                outcome = rng.choice(["answered", "answered", "no_answer", "busy"])
                uid += 1
                rows.append((at, f"seed.{uid}", "reminder", pool, number, "ok", "least_used",
                             outcome, 30 if outcome == "answered" else 0))  # fmt: skip
                dialled += 1
                answered += outcome == "answered"
            if dialled:
                truth[(number, day.isoformat())] = (answered, dialled)
    await agent.db.executemany(
        "INSERT INTO call_audit (at, uniqueid, purpose, pool, number, status, reason, outcome,"
        " talk_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return truth


_HIDDEN = re.compile(r'name="(csrf|presign)" value="([^"]+)"')


@dataclass
class WebSession:
    """A browser's view of the dashboard without the browser: cookies and form tokens."""

    rig: Rig
    http: aiohttp.ClientSession
    csrf: str = ""

    async def get(self, path: str) -> tuple[int, str]:
        async with self.http.get(self.rig.base + path, allow_redirects=False) as r:
            return r.status, await r.text()

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> tuple[int, str]:
        form = dict(data or {})
        if csrf:
            form["csrf"] = self.csrf
        async with self.http.post(self.rig.base + path, data=form, allow_redirects=False) as r:
            return r.status, await r.text()

    async def close(self) -> None:
        await self.http.close()


async def sign_in(rig: Rig, role: str) -> WebSession:
    # An IP-address host: aiohttp's cookie jar keeps its cookies only when told to.
    web = WebSession(rig, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
    _, page = await web.get("/")
    presign = dict(_HIDDEN.findall(page))["presign"]
    status, _ = await web.post(
        "/signin", {"token": rig.tokens[role], "presign": presign}, csrf=False
    )
    assert status == 303
    _, page = await web.get("/recordings" if role == "auditor" else "/")
    web.csrf = dict(_HIDDEN.findall(page))["csrf"]
    return web
