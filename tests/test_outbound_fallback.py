"""Fallback health: a pool's fallback number is presented only while it is healthy; a healthy
reserve number, then the dialplan's own fallback, take over; heavy fallback use is alerted."""

from __future__ import annotations

from agent.app import Agent
from agent.outbound.fallback import PATTERN_USES
from tests.conftest import AgentFactory
from tests.test_outbound_engine import call, pools

FALLBACK = "+33142000001"  # the pool's fallback, and one of its numbers
RESERVE = "+33142990001"


async def _quarantine(agent: Agent, number: str) -> None:
    assert agent.outbound is not None
    for _ in range(2):  # reports_to_quarantine = 2
        await agent.outbound.report_spam(number, "cli")


async def test_a_quarantined_fallback_is_never_handed_out_the_reserve_takes_over(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(pools(cap=3, numbers=2, on_exhausted="fallback"))
    assert agent.outbound is not None
    await _quarantine(agent, FALLBACK)
    for _ in range(3):  # the pool's other number, up to its cap
        first = await call(agent)
        assert first["TRUSTLINE_STATUS"] == "ok" and first["CALLERID(num)"] == "+33142000002"
    for _ in range(2):
        answer = await call(agent)
        assert answer["TRUSTLINE_STATUS"] == "exhausted"
        assert answer["CALLERID(num)"] == RESERVE  # never the quarantined fallback
    # The copy the dialplan keeps in AstDB for when the agent is down follows the same rule.
    assert agent.outbound.fallbacks() == {"reminder": RESERVE}


async def test_with_no_healthy_reserve_the_agent_presents_no_number(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(pools(cap=1, numbers=1, on_exhausted="fallback"))
    assert agent.outbound is not None
    await _quarantine(agent, FALLBACK)
    await _quarantine(agent, RESERVE)
    answer = await call(agent)
    assert answer["TRUSTLINE_STATUS"] == "exhausted"
    # No caller ID from the agent: the subroutine keeps the one it preset (AstDB, global).
    assert "CALLERID(num)" not in answer
    assert agent.outbound.fallbacks() == {}


async def test_the_fallback_ceiling_then_the_reserve_then_nothing(make_agent: AgentFactory) -> None:
    agent = await make_agent(pools(cap=2, numbers=1, on_exhausted="fallback"))
    handed = [(await call(agent)).get("CALLERID(num)") for _ in range(8)]
    # Its cap as a number, its cap again as the fallback: never more than twice its cap a day.
    assert handed == [FALLBACK] * 4 + [RESERVE] * 2 + [None] * 2


async def test_a_fallback_used_all_the_time_is_alerted_once(make_agent: AgentFactory) -> None:
    cap = PATTERN_USES + 5
    agent = await make_agent(pools(cap=cap, numbers=1, on_exhausted="fallback"))
    assert agent.alerts is not None
    for _ in range(cap):  # today's cap
        assert (await call(agent))["TRUSTLINE_STATUS"] == "ok"
    for _ in range(PATTERN_USES + 3):
        answer = await call(agent)
        assert answer["CALLERID(num)"] == FALLBACK  # healthy: under its own daily ceiling
    await agent.alerts.drain()
    kinds = [i.kind for i in await agent.alerts.incidents(open_only=True)]
    assert kinds.count("fallback_used") == 1
