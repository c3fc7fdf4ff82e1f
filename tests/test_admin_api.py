"""The admin API over a real agent (HTTP on loopback, SQLite file): figures, actions, audit
rows, tokens from the CLI, recordings streamed to an auditor."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from agent.clock import FrozenClock
from agent.recordings.keyring import init_keyring
from tests.admin_rig import PATIENT, Rig, seed_outcomes, start_rig
from tests.captures import MIXMONITOR_WAV
from tests.conftest import AgentFactory
from tests.test_cli import trustline

OURS = {"+33142000001": "reminders", "+33142000002": "reminders", "+33472000003": "reminders"}


@pytest.fixture
async def rig(make_agent: AgentFactory) -> Rig:
    return await start_rig(make_agent)


async def audit_rows(rig: Rig) -> list[tuple[str, str, str, dict[str, object]]]:
    assert rig.agent.db is not None
    rows = await rig.agent.db.fetchall(
        "SELECT actor, action, target, detail FROM admin_audit ORDER BY id"
    )
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


async def test_openapi_needs_no_token_and_comes_from_the_models(rig: Rig) -> None:
    status, spec = await rig.call("GET", "/api/v1/openapi.json")
    assert status == 200
    report = spec["paths"]["/api/v1/reports"]["post"]
    assert report["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReportIn"
    }
    assert set(spec["components"]["schemas"]["ReportIn"]["properties"]) == {
        "number",
        "source",
        "id",
    }
    assert "/api/v1/numbers/{number}/reinstate" in spec["paths"]
    assert "/api/v1/recordings/{id}/decrypt" in spec["paths"]


async def test_pools_answer_capacity_usable_numbers_and_rates(rig: Rig, clock: FrozenClock) -> None:
    truth = await seed_outcomes(rig.agent, clock, OURS, 8)
    status, body = await rig.call("GET", "/api/v1/pools", "viewer")
    assert status == 200
    pools = {p["name"]: p for p in body["pools"]}
    reminders = pools["reminders"]
    assert (reminders["numbers"], reminders["usable"]) == (3, 3)
    assert reminders["capacity_today"] == 80 + 60 + 80
    today = "2026-11-17"
    answered = sum(a for (_, d), (a, _) in truth.items() if d == today)
    dialled = sum(n for (_, d), (_, n) in truth.items() if d == today)
    assert reminders["answer_rate_today"] == pytest.approx(answered / dialled, abs=1e-4)
    week_a = sum(a for (_, d), (a, _) in truth.items() if d != today)
    week_n = sum(n for (_, d), (_, n) in truth.items() if d != today)
    assert reminders["answer_rate_7_days"] == pytest.approx(week_a / week_n, abs=1e-4)
    assert pools["reserve"]["reserve"] is True


async def test_stats_are_the_figures_of_trustline_stats(
    rig: Rig, clock: FrozenClock, tmp_path: Path
) -> None:
    await seed_outcomes(rig.agent, clock, OURS, 10)
    status, body = await rig.call(
        "GET", "/api/v1/stats?from=2026-11-10&to=2026-11-17&by_number=1", "viewer"
    )
    assert status == 200 and body["stats"]
    env = {
        "TRUSTLINE_DATA_DIR": str(tmp_path / "data"),
        "TRUSTLINE_CONFIG": str(tmp_path / "pools.toml"),
    }
    cli = await trustline(
        "stats", "--from", "2026-11-10", "--to", "2026-11-17", "--by-number", "--json", env=env
    )
    assert cli.returncode == 0, cli.stderr
    assert body["stats"] == [json.loads(line) for line in cli.stdout.splitlines()]


async def test_reports_count_once_per_id_quarantine_then_reinstate_with_audit(rig: Rig) -> None:
    number = "+33142000002"
    report = {"number": "01 42 00 00 02", "source": "ivr", "id": "r-1"}
    status, first = await rig.call("POST", "/api/v1/reports", "operator", json=report)
    assert status == 200 and first["reports_today"] == 1 and not first["duplicate"]
    status, again = await rig.call("POST", "/api/v1/reports", "operator", json=report)
    assert status == 200 and again["duplicate"] and again["reports_today"] == 1
    status, second = await rig.call(
        "POST", "/api/v1/reports", "operator", json={**report, "id": "r-2"}
    )
    assert second["quarantined"] is True
    _, numbers = await rig.call("GET", "/api/v1/numbers", "viewer")
    row = next(n for n in numbers["numbers"] if n["number"] == number)
    assert row["state"] == "quarantined" and row["until"] is not None

    status, done = await rig.call("POST", f"/api/v1/numbers/{number}/reinstate", "operator")
    assert status == 200 and done == {"number": number, "reinstated": True, "state": "active"}
    actions = [(a, act, t, d["role"], d["remote"]) for a, act, t, d in await audit_rows(rig)]
    assert actions == [
        ("operator-user", "spam_report", number, "operator", "127.0.0.1"),
        ("operator-user", "spam_report", number, "operator", "127.0.0.1"),
        ("operator-user", "reinstate", number, "operator", "127.0.0.1"),
    ]


async def test_unknown_number_and_bad_bodies_are_clear_errors(rig: Rig) -> None:
    status, body = await rig.call("POST", "/api/v1/numbers/+33142999999/reinstate", "operator")
    assert status == 404 and "not in any pool" in body["error"]
    status, body = await rig.call("POST", "/api/v1/reports", "operator", data=b"{not json")
    assert status == 400 and body["error"].startswith("invalid body")
    status, body = await rig.call("POST", "/api/v1/reports", "operator", json={"source": "x"})
    assert status == 400 and "number" in body["error"]
    status, body = await rig.call("GET", "/api/v1/nothing-here", "viewer")
    assert status == 404 and "error" in body


async def test_alerts_are_listed_and_acknowledged(rig: Rig) -> None:
    assert rig.agent.alerts is not None
    incident, _ = await rig.agent.alerts.raise_("pool_exhausted", "reminders", "no number left")
    status, body = await rig.call("GET", "/api/v1/alerts?open=1", "viewer")
    assert [a["id"] for a in body["alerts"]] == [incident.id]
    assert body["alerts"][0]["message"] == "no number left"
    status, ack = await rig.call("POST", f"/api/v1/alerts/{incident.id}/ack", "operator")
    assert status == 200 and ack == {"id": incident.id, "acked": True}
    _, after = await rig.call("GET", "/api/v1/alerts", "viewer")
    assert after["alerts"][0]["acked_at"] is not None
    [(_, action, target, _)] = await audit_rows(rig)
    assert (action, target) == ("alert_ack", f"alert {incident.id}")


async def test_block_list_edits_reach_screening_and_never_show_the_number(rig: Rig) -> None:
    status, added = await rig.call(
        "POST",
        "/api/v1/screening/lists/block",
        "operator",
        json={"entry": PATIENT, "note": "abuse"},
    )
    assert status == 200 and added["entry"] == "***1234" and added["changed"]
    assert rig.agent.screening is not None
    assert [e.entry for e in await rig.agent.screening.entries("block")] == [PATIENT]
    _, listing = await rig.call("GET", "/api/v1/screening/lists/block", "viewer")
    assert listing["entries"][0]["entry"] == "***1234"
    status, removed = await rig.call(
        "DELETE", f"/api/v1/screening/lists/block/{added['id']}", "operator"
    )
    assert status == 200 and removed["changed"]
    assert await rig.agent.screening.entries("block") == []
    audit = await audit_rows(rig)
    assert [(a[1], a[2]) for a in audit] == [
        ("list_add", "block ***1234"),
        ("list_remove", "block ***1234"),
    ]
    assert PATIENT not in json.dumps(audit)


async def test_tokens_from_the_cli_admin_tokens_from_the_api(rig: Rig, tmp_path: Path) -> None:
    env = {"TRUSTLINE_DATA_DIR": str(tmp_path / "data")}
    made = await trustline("tokens", "create", "--name", "alice", "--role", "operator", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    async with (
        aiohttp.ClientSession() as s,
        s.get(rig.base + "/api/v1/numbers", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200
    listed = await trustline("tokens", "list", "--json", env=env)
    alice = [json.loads(line) for line in listed.stdout.splitlines() if '"alice"' in line]
    assert alice and alice[0]["state"] == "live" and token not in listed.stdout
    again = await trustline("tokens", "create", "--name", "alice", "--role", "viewer", env=env)
    assert again.returncode == 64 and "revoke it first" in again.stderr
    revoked = await trustline("tokens", "revoke", "alice", env=env)
    assert "revoked" in revoked.stdout
    async with (
        aiohttp.ClientSession() as s,
        s.get(rig.base + "/api/v1/numbers", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 401

    status, created = await rig.call(
        "POST", "/api/v1/tokens", "admin", json={"name": "bob", "role": "viewer", "expires_days": 1}
    )
    assert status == 200 and created["token"]["state"] == "live"
    bob = {"Authorization": f"Bearer {created['secret']}"}
    async with aiohttp.ClientSession() as s, s.get(rig.base + "/api/v1/pools", headers=bob) as r:
        assert r.status == 200
    _, tokens = await rig.call("GET", "/api/v1/tokens", "admin")
    assert created["secret"] not in json.dumps(tokens)
    await rig.call("POST", "/api/v1/tokens/bob/revoke", "admin")
    async with aiohttp.ClientSession() as s, s.get(rig.base + "/api/v1/pools", headers=bob) as r:
        assert r.status == 401


async def test_an_expired_token_is_refused(rig: Rig, clock: FrozenClock) -> None:
    _, created = await rig.call(
        "POST",
        "/api/v1/tokens",
        "admin",
        json={"name": "temp", "role": "viewer", "expires_days": 1},
    )
    clock.advance(86400 + 1)
    async with (
        aiohttp.ClientSession() as s,
        s.get(
            rig.base + "/api/v1/pools", headers={"Authorization": f"Bearer {created['secret']}"}
        ) as r,
    ):
        assert r.status == 401


async def test_an_auditor_streams_a_recording_and_the_access_is_audited(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "monitor"
    folder.mkdir()
    keyring = tmp_path / "data" / "keyring"
    keyring.parent.mkdir(mode=0o700)
    init_keyring(keyring, time.time())
    rig = await start_rig(make_agent, recordings_dir=str(folder), keyring=str(keyring))
    (folder / "call-1.wav").write_bytes(MIXMONITOR_WAV.read_bytes())
    assert rig.agent.recordings is not None
    row = await rig.agent.recordings.seal_file("call-1.wav", "1795344922.29")

    status, listing = await rig.call("GET", "/api/v1/recordings", "auditor")
    assert status == 200 and [r["id"] for r in listing["recordings"]] == [row.id]
    assert "call-1" not in json.dumps(listing)  # file names can hold numbers: not shown
    for role in ("viewer", "operator", "admin"):
        status, _ = await rig.call(
            "POST", f"/api/v1/recordings/{row.id}/decrypt", role, json={"reason": "x"}
        )
        assert status == 403
    status, body = await rig.call(
        "POST", f"/api/v1/recordings/{row.id}/decrypt", "auditor", json={"reason": " "}
    )
    assert status == 400 and "reason" in body["error"]
    _, verified = await rig.call("POST", f"/api/v1/recordings/{row.id}/verify", "auditor")
    assert verified == {"id": row.id, "ok": True, "problem": None}

    async with (
        aiohttp.ClientSession() as s,
        s.post(
            rig.base + f"/api/v1/recordings/{row.id}/decrypt",
            headers=rig.auth("auditor"),
            json={"reason": "complaint 42"},
        ) as r,
    ):
        assert r.status == 200 and r.headers["Content-Type"] == "audio/wav"
        audio = await r.read()
    assert audio == MIXMONITOR_WAV.read_bytes()
    [access] = await rig.agent.recordings.audit(row.id)
    assert (access.action, access.outcome, access.reason) == ("decrypt", "ok", "complaint 42")
    assert access.operator == "auditor-user (auditor, 127.0.0.1)"
    status, exported = await rig.call("GET", "/api/v1/audit", "auditor")
    assert status == 200
    assert [e["action"] for e in exported["entries"]] == ["recording_decrypt"]
    assert exported["entries"][0]["detail"]["role"] == "auditor"


def test_cli_module_stays_cheap_to_import() -> None:
    # `trustline --help` imports every feature's CLI module: tokens must not pull aiohttp in.
    import subprocess

    code = "import agent.cli.tokens, sys; print('aiohttp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ
    )
    assert out.stdout.strip() == "False"


async def test_admin_rows_join_the_hash_chain_and_the_auditors_export(
    rig: Rig, clock: FrozenClock
) -> None:
    from agent.compliance.chain import AuditChain
    from agent.compliance.export import export_rows
    from agent.compliance.repo import ComplianceRepo
    from tests.conftest import PARIS

    await rig.call("POST", "/api/v1/numbers/+33142000001/reinstate", "operator")
    assert rig.agent.db is not None
    repo = ComplianceRepo(rig.agent.db)
    chain = AuditChain(repo)
    assert await chain.extend(clock.now()) >= 1
    assert (await chain.verify()).ok
    rows = await export_rows(repo, 0.0, clock.now() + 1, PARIS)
    [mine] = [r for r in rows if r["kind"] == "admin"]
    assert (mine["actor"], mine["action"]) == ("operator-user", "reinstate")


async def test_a_reserve_number_waits_as_reserve_then_warms_up_in_the_pool(rig: Rig) -> None:
    async def state_of(number: str) -> tuple[str, str]:
        _, body = await rig.call("GET", "/api/v1/numbers", "viewer")
        row = next(n for n in body["numbers"] if n["number"] == number)
        return row["pool"], row["state"]

    assert await state_of("+33142000099") == ("reserve", "reserve")
    for number in ("+33142000001", "+33142000002"):  # min_active = 2: one usable left
        for source in ("ivr", "agent"):
            body = {"number": number, "source": source}
            await rig.call("POST", "/api/v1/reports", "operator", json=body)
    pool, state = await state_of("+33142000099")
    assert pool == "reminders" and state == "active (warming up, reserve from reserve)"
    _, pools = await rig.call("GET", "/api/v1/pools", "viewer")
    reserve = next(p for p in pools["pools"] if p["name"] == "reserve")
    assert reserve["numbers"] == 0  # nothing left waiting in the reserve


async def test_dashboard_forms_act_and_are_audited_like_the_api(rig: Rig) -> None:
    from tests.admin_rig import sign_in

    web = await sign_in(rig, "operator")
    try:
        status, _ = await web.post("/numbers/+33142000001/report")
        assert status == 303
        status, _ = await web.post("/screening/allow/add", {"entry": "+44*", "note": "UK"})
        assert status == 303
        _, page = await web.get("/screening")
        assert "+44*" in page and "UK" in page
    finally:
        await web.close()
    assert rig.agent.db is not None
    row = await rig.agent.db.fetchone("SELECT source FROM spam_reports")
    assert row is not None and row[0] == "dashboard:operator"
    assert [(a[1], a[2]) for a in await audit_rows(rig)] == [
        ("spam_report", "+33142000001"),
        ("list_add", "allow +44*"),
    ]
