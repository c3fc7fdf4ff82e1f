"""The running agent's reputation loop end to end: an outbound event raises an alert that
reaches the configured webhook, signed; `trustline alerts` lists the same incident."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.clock import FrozenClock
from tests.conftest import POOLS, AgentFactory
from tests.test_alerts import SECRET, Receiver, receiver

__all__ = ["receiver"]  # the webhook receiver fixture


async def test_a_quarantine_in_the_running_agent_reaches_the_webhook_once(
    make_agent: AgentFactory, receiver: Receiver, tmp_path: Path, clock: FrozenClock
) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    pools = (
        POOLS
        + f"""
[alerts]
webhooks = [{{ url = "{receiver.url}", secret_file = "{secret}" }}]
"""
    )
    agent = await make_agent(pools)
    assert agent.outbound is not None and agent.alerts is not None
    for _ in range(2):  # reports_to_quarantine defaults to 2
        await agent.outbound.report_spam("+33142000002", "cli")
    await agent.alerts.drain()
    await asyncio.wait_for(receiver.arrived.wait(), 10)

    def alerts() -> list[dict[str, object]]:  # the weekly report may be posted too
        return [b for _k, b in receiver.acked if "alert" in b]

    for _ in range(100):
        if alerts():
            break
        await asyncio.sleep(0.05)
    assert receiver.bad_signatures == 0
    [body] = alerts()
    alert = body["alert"]
    assert body["event"] == "raised" and isinstance(alert, dict)
    assert (alert["kind"], alert["subject"]) == ("number_quarantined", "reminders")
    assert "+33142000002" not in str(body)  # masked: no full number leaves the agent
    open_incidents = await agent.alerts.incidents(open_only=True)
    assert [i.kind for i in open_incidents] == ["number_quarantined"]
