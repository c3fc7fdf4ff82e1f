"""Start-up runs without the cycle collector; the agent that is ready, or that failed to
start, has it running again (a long-lived process must collect its cycles)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from agent import memory


@pytest.fixture(autouse=True)
def collector_restored() -> object:
    was = gc.isenabled()
    yield
    gc.unfreeze()
    if was:
        gc.enable()


def test_the_collector_is_paused_while_starting_and_back_once_settled() -> None:
    with memory.starting():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the agent is built, not yet settled
    asyncio.run(memory.settle(None))
    assert gc.isenabled()


def test_a_failed_start_turns_the_collector_back_on() -> None:
    with pytest.raises(RuntimeError), memory.starting():
        raise RuntimeError("store unreachable")
    assert gc.isenabled()
