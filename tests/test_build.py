"""The one builder: `trustline run` and the admin commands make their services the same way,
and a reload of pools.toml reaches every service the builder made."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp

from agent.build import CurrentConfig
from agent.config import load_config
from tests.conftest import POOLS, AgentFactory, write_config

ROOT = Path(__file__).resolve().parents[1]
VCARD = "\n[contact.vcard]\nenabled = true\n"
URGENT = """
[pools.urgent]
purposes = ["urgent"]
numbers = [ { number = "+33142000050", name = "Clinique StMarc" } ]
"""


async def _status(agent_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(agent_url) as response:
        return response.status


async def test_a_reload_reaches_the_services_that_read_the_config(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await make_agent(POOLS + VCARD)
    assert agent.http_address is not None and agent.alerts is not None
    host, port = agent.http_address
    card = f"http://{host}:{port}/vcard/urgent.vcf"
    assert await _status(card) == 404
    assert agent.alerts.webhooks == ()
    hook = tmp_path / "hook.secret"
    hook.write_bytes(b"s" * 32)
    hook.chmod(0o600)
    alerts = (
        f'\n[alerts]\nwebhooks = [{{ url = "http://127.0.0.1:9/x", secret_file = "{hook}" }}]\n'
    )
    write_config(tmp_path / "pools.toml", POOLS + URGENT + VCARD + alerts)
    assert await agent.reload_config()
    # The vCard route, the alerts' webhooks and the screening service see the new file.
    assert await _status(card) == 200
    assert len(agent.alerts.webhooks) == 1
    assert "urgent" in agent.config.pools


async def test_a_subscriber_that_fails_does_not_keep_the_others_from_the_new_config(
    tmp_path: Path,
) -> None:
    first = load_config(write_config(tmp_path / "a.toml", POOLS))
    second = load_config(write_config(tmp_path / "b.toml", POOLS + URGENT))
    current = CurrentConfig(first)
    seen: list[str] = []

    async def broken(_config: object) -> None:
        raise RuntimeError("cannot take it")

    async def taker(config: object) -> None:
        seen.append(str(getattr(config, "source", "")))

    current.subscribe(broken)
    current.subscribe(taker)
    await current.push(second)
    assert current.get() is second and seen == [second.source]


def test_only_the_run_command_imports_the_agent_owner() -> None:
    importers = set()
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if "agent.app" in names:
                importers.add(path.relative_to(ROOT).as_posix())
    assert importers == {"agent/cli/outbound.py"}
