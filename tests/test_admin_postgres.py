"""The API and dashboard on PostgreSQL: the same figures, actions and pages as on SQLite
(the read model's SQL is written once; bucket bounds are parameters, no time-zone SQL)."""

from __future__ import annotations

from agent.clock import FrozenClock
from tests.admin_rig import seed_outcomes, sign_in, start_rig
from tests.conftest import AgentFactory
from tests.postgres_schema import fresh_schema

OURS = {"+33142000001": "reminders", "+33142000002": "reminders", "+33472000003": "reminders"}


async def test_api_and_pages_on_postgresql(make_agent: AgentFactory, clock: FrozenClock) -> None:
    async for url in fresh_schema():
        rig = await start_rig(make_agent, database_url=url)
        try:
            truth = await seed_outcomes(rig.agent, clock, OURS, 8)
            _, pools = await rig.call("GET", "/api/v1/pools", "viewer")
            reminders = next(p for p in pools["pools"] if p["name"] == "reminders")
            today = [v for (_, d), v in truth.items() if d == "2026-11-17"]
            rate = sum(a for a, _ in today) / sum(n for _, n in today)
            assert abs(reminders["answer_rate_today"] - rate) < 1e-4
            for source in ("ivr", "agent"):
                body = {"number": "+33142000002", "source": source}
                status, _ = await rig.call("POST", "/api/v1/reports", "operator", json=body)
                assert status == 200
            status, done = await rig.call(
                "POST", "/api/v1/numbers/+33142000002/reinstate", "operator"
            )
            assert status == 200 and done["reinstated"]
            status, added = await rig.call(
                "POST", "/api/v1/screening/lists/block", "operator", json={"entry": "+44*"}
            )
            assert status == 200 and added["entry"] == "+44*"
            status, stats = await rig.call("GET", "/api/v1/stats?days=3", "viewer")
            assert status == 200 and stats["stats"]
            _, audit = await rig.call("GET", "/api/v1/audit", "admin")
            assert [e["action"] for e in audit["entries"]][:2] == ["list_add", "reinstate"]
            web = await sign_in(rig, "operator")
            try:
                for path in ("/", "/pools/reminders", "/numbers/+33142000002", "/screening"):
                    status, page = await web.get(path)
                    assert status == 200, path
                status, page = await web.get("/numbers/+33142000002")
                assert "reinstate" in page and 'class="pt"' in page
            finally:
                await web.close()
        finally:
            await rig.agent.stop()
