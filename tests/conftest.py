"""Shared fixtures: a real agent on ephemeral ports, a real SQLite file, an injected clock."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.app import Agent
from agent.clock import FrozenClock
from agent.settings import Settings

PARIS = ZoneInfo("Europe/Paris")

POOLS = """
[defaults]
timezone = "Europe/Paris"
region = "FR"
daily_cap = 80

[pools.reminders]
purposes = ["reminder", "confirmation"]
fallback = "+33142000001"
min_active = 2
numbers = [
  { number = "+33142000001", name = "Clinique StMarc" },
  { number = "+33142000002", name = "Clinique StMarc", daily_cap = 60 },
  { number = "+33472000003", name = "Clinique Lyon" },
]

[pools.reserve]
reserve = true
numbers = [ { number = "+33142000099", name = "Clinique StMarc" } ]
"""


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def clock() -> FrozenClock:
    # A Tuesday morning in Paris.
    return FrozenClock(datetime(2026, 11, 17, 9, 0, tzinfo=PARIS))


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def make_agent(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[AgentFactory]:
    """Start real agents (FastAGI + HTTP on ephemeral loopback ports, SQLite in tmp_path)."""
    started: list[Agent] = []

    async def factory(pools: str = POOLS, **settings: object) -> Agent:
        config = write_config(tmp_path / "pools.toml", pools)
        values: dict[str, object] = {
            "config": config,
            "data_dir": tmp_path / "data",
            "agi_listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "config_poll_seconds": 0.05,
        }
        values.update(settings)
        agent = Agent(Settings(**values), clock=clock)  # type: ignore[arg-type]  # pydantic checks them
        await agent.start()
        started.append(agent)
        return agent

    yield factory
    for agent in reversed(started):
        await agent.stop()


def agi_port(agent: Agent) -> int:
    assert agent.agi is not None
    return agent.agi.sockets[0][1]
