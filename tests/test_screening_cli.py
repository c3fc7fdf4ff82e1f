"""trustline screen / block / allow, as an admin runs them beside a running agent; reload of
the [screening] section; the dialplan subroutine that acts on the verdict."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from agent import contract
from agent.clock import FrozenClock
from agent.datadir import load_hash_key, open_store
from agent.settings import Settings
from tests.conftest import AgentFactory, agi_port, write_config
from tests.test_cli import trustline
from tests.test_screening_fastagi import (
    FR_LINE,
    SCREENING_POOLS,
    inbound,
    install_screening,
)

DIALPLAN = Path(__file__).resolve().parents[1] / "dialplan" / "trustline-inbound.conf"


def where(tmp_path: Path) -> list[str]:
    return ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]


async def agent_data(tmp_path: Path) -> None:
    """The store and key an agent leaves on its first start (admin commands never make them)."""
    settings = Settings(data_dir=tmp_path / "data")
    await (await open_store(settings)).close()
    load_hash_key(settings.hash_key_path)


async def test_screen_explains_every_rule_without_a_call(tmp_path: Path) -> None:
    write_config(tmp_path / "pools.toml", SCREENING_POOLS)
    await agent_data(tmp_path)
    out = await trustline(
        "screen",
        "--caller",
        "0899123456",
        "--dialled",
        FR_LINE,
        "--attestation",
        "TN-Validation-Passed-C",
        *where(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in out.stdout.splitlines()[1:12]}
    assert list(rows) == [
        "blocklist",
        "withheld",
        "invalid_number",
        "own_number",
        "premium_rate",
        "toll_free",
        "international",
        "stir_c",
        "burst",
        "flood",
        "callback",
    ]
    assert rows["premium_rate"] == ["+60", "yes", "+60"]
    assert rows["stir_c"] == ["+15", "yes", "+15"]
    assert rows["withheld"] == ["+40", "no", "+0"]
    assert "TOTAL 75 -> voicemail" in out.stdout
    assert "TRUSTLINE_REASONS=premium_rate,stir_c" in out.stdout
    withheld = await trustline(
        "screen", "--caller", "0612345678", "--dialled", FR_LINE, "--withheld", *where(tmp_path)
    )
    assert "TOTAL 50 -> challenge" in withheld.stdout
    # A dry run: nothing was counted or stored.
    with sqlite3.connect(tmp_path / "data" / "trustline.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM screening_decisions").fetchone() == (0,)


async def test_screen_takes_the_pbx_verify_result(tmp_path: Path) -> None:
    write_config(tmp_path / "pools.toml", SCREENING_POOLS)
    await agent_data(tmp_path)
    out = await trustline(
        "screen",
        "--caller",
        "0612345678",
        "--dialled",
        FR_LINE,
        "--attestation",
        "A",
        "--verify-result",
        "Signature verification failed",
        *where(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert "TRUSTLINE_REASONS=stir_failed" in out.stdout


async def test_block_and_allow_lists_from_the_cli_reach_the_running_agent(
    make_agent: AgentFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    agent = await make_agent(SCREENING_POOLS)
    service = install_screening(agent, clock)
    port = agi_port(agent)
    assert (await inbound(port, "0612345678", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"

    added = await trustline(
        "block", "add", "06 12 34 56 78", "--note", "harassment", *where(tmp_path)
    )
    assert added.returncode == 0, added.stderr
    assert "block: added +33612345678" in added.stdout
    prefix = await trustline("block", "add", "0044*", *where(tmp_path))
    assert "block: added +44*" in prefix.stdout
    assert (await trustline("allow", "add", "+447700900123", *where(tmp_path))).returncode == 0
    listed = await trustline("block", "list", *where(tmp_path))
    assert re.search(r"^\+33612345678\t.* UTC\tharassment$", listed.stdout, re.M)
    assert re.search(r"^\+44\*\t", listed.stdout, re.M)
    as_json = await trustline("block", "list", "--json", *where(tmp_path))
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["entry"], r["source"], r["note"]) for r in rows] == [
        ("+33612345678", "store", "harassment"),
        ("+44*", "store", ""),
    ]

    # The agent re-reads the lists in the background every 2 s under traffic; the first call
    # after a quiet spell (10 s, on its injected clock) waits for a fresh read.
    clock.advance(11)
    blocked = await inbound(port, "+33612345678", FR_LINE, "A")
    assert (blocked[contract.VAR_VERDICT], blocked[contract.VAR_REASONS]) == (
        "block",
        "blocklist,stir_a",
    )
    uk = await inbound(port, "+447700900123", FR_LINE, "A")
    assert uk[contract.VAR_REASONS] == "allowlist"

    removed = await trustline("block", "remove", "+33612345678", *where(tmp_path))
    assert removed.returncode == 0 and "block: removed +33612345678" in removed.stdout
    again = await trustline("block", "remove", "+33612345678", *where(tmp_path))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "block: nothing to do, +33612345678 was not listed\n"
    clock.advance(11)
    assert (await inbound(port, "+33612345678", FR_LINE, "A"))[contract.VAR_VERDICT] == "allow"

    bad = await trustline("block", "add", "44*", *where(tmp_path))
    assert bad.returncode == 64 and "+44*" in bad.stderr
    await service.close()


async def test_screening_weights_reload_with_the_config(
    make_agent: AgentFactory, clock: FrozenClock, tmp_path: Path
) -> None:
    agent = await make_agent(SCREENING_POOLS)
    service = install_screening(agent, clock)
    port = agi_port(agent)
    assert (await inbound(port, "", FR_LINE, "A"))[contract.VAR_VERDICT] == "challenge"
    write_config(
        tmp_path / "pools.toml",
        SCREENING_POOLS
        + """
[screening]
own_numbers = ["+33 1 42 00 00 50"]
[screening.weights]
withheld = 80
""",
    )
    assert await agent.reload_config()
    clock.advance(400)
    assert (await inbound(port, "", FR_LINE, "A"))[contract.VAR_VERDICT] == "block"
    assert (await inbound(port, "0142000050", FR_LINE, "A"))[contract.VAR_REASONS] == (
        "own_number,stir_a"
    )
    # A broken [screening] section is refused whole: the running weights stay.
    write_config(tmp_path / "pools.toml", SCREENING_POOLS + "[screening]\nwheights = {}\n")
    assert not await agent.reload_config()
    clock.advance(400)
    assert (await inbound(port, "", FR_LINE, "A"))[contract.VAR_VERDICT] == "block"
    await service.close()


def test_the_dialplan_subroutine_acts_on_every_verdict() -> None:
    text = "\n".join(line.split(";", 1)[0] for line in DIALPLAN.read_text().splitlines())
    assert "[trustline-inbound]" in text
    agi = text.index(f"AGI(${{agi}}/{contract.ROUTE_INBOUND}?answer=one,${{dialled}},")
    # Allow is preset before the agent is asked: an agent that is down lets the call through.
    assert text.index(f"Set({contract.VAR_VERDICT}={contract.VERDICT_ALLOW})") < agi
    for verdict in (contract.VERDICT_BLOCK, contract.VERDICT_VOICEMAIL, contract.VERDICT_CHALLENGE):
        assert f'$["${{{contract.VAR_VERDICT}}}" = "{verdict}"]' in text
    for name in contract.INBOUND_SETS:
        assert "${" + name + "}" in text
    # The challenge reads one digit, with a retry limit; each outcome is counted on AMI.
    # The prompt is Read's own, so a digit pressed while it plays is not lost.
    assert "Read(pressed,${prompt}&digits/${digit},1," in text
    assert "${tries} < ${max_tries}" in text
    outcomes = set(re.findall(r"UserEvent\(TrustlineScreening,Verdict: \w+,Outcome: (\w+),", text))
    assert {"passed", "failed", "voicemail", "blocked"} <= outcomes
    # Nothing on the allow path hangs up.
    allow_path = text[agi : text.index("n(challenge)")]
    assert "Hangup" not in allow_path
    # Asterisk's verify_result reaches the agent, not just the attestation it may contradict.
    assert "AGI(${agi}/inbound?answer=one,${dialled},${attestation},${verify}," in text
    assert "${STIR_SHAKEN(0,verify_result)}" in DIALPLAN.read_text()
    # A voicemail verdict with no mailbox configured returns to the caller's voicemail step.
    assert "Return(voicemail)" in text
    # The caller's number is never written to the Asterisk log by the subroutine: it only
    # reaches the agent, filtered, as the AGI's last argument (issue 16: never a header).
    subroutine = text[text.index("[trustline-inbound]") : text.index("[trustline-example-inbound]")]
    uses = [ln for ln in subroutine.splitlines() if "CALLERID(num)" in ln]
    assert [ln.split(",", 1)[1].startswith("AGI(") for ln in uses] == [True]
    assert uses[0].endswith(",${FILTER(0-9+,${CALLERID(num)})})")
