"""The running agent's reputation loop end to end: an outbound event raises an alert that
reaches the configured webhook, signed; `trustline alerts` lists the same incident."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from agent.clock import FrozenClock
from agent.reputation.providers import Verdict
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


async def test_a_flag_under_on_flag_quarantine_takes_the_number_out_of_its_pool(
    make_agent: AgentFactory,
) -> None:
    pools = POOLS.replace(
        'purposes = ["reminder", "confirmation"]',
        'purposes = ["reminder", "confirmation"]\non_flag = "quarantine"',
    )
    agent = await make_agent(pools)
    assert agent.scanner is not None and agent.outbound is not None
    flagged = Verdict("+33142000002", 0.97, "spam likely", True)
    assert await agent.scanner.record([flagged], "csv:vendor.csv") == (1, 0)
    rows = {r["number"]: r for r in agent.outbound.number_rows()}
    assert isinstance(rows["+33142000002"]["state"], str)  # number_rows(): dict[str, object]
    assert rows["+33142000002"]["state"].startswith("quarantined")
    assert rows["+33142000001"]["state"] == "active"
    assert agent.alerts is not None
    await agent.alerts.drain()
    kinds = sorted(i.kind for i in await agent.alerts.incidents(open_only=True))
    assert kinds == ["number_quarantined", "reputation_flag"]


async def test_the_agent_alerts_on_its_own_faults_and_resolves_them(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    monitor = tmp_path / "monitor"
    monitor.mkdir()  # MixMonitor's folder exists, but no keyring: recordings would stay clear
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    ami_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the AMI link stays down
    agent = await make_agent(
        recordings_dir=monitor, ami_user="trustline", ami_secret="x", ami_port=ami_port
    )
    assert agent.watch is not None and agent.alerts is not None
    await agent.watch.tick()
    kinds = {i.kind: i for i in await agent.alerts.incidents(open_only=True)}
    assert {"ami_down", "keyring_missing"} <= set(kinds)
    assert "deadline_misses" not in kinds
    monitor.rmdir()  # recordings no longer in use on this host: the keyring alert clears
    await agent.watch.tick()
    still_open = {i.kind for i in await agent.alerts.incidents(open_only=True)}
    assert "keyring_missing" not in still_open and "ami_down" in still_open
