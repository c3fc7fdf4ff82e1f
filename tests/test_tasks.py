"""Stopping a background task: it ends, and a stop that is itself cancelled stays cancelled."""

from __future__ import annotations

import asyncio

import pytest

from agent.tasks import stop_task


async def test_stop_task_ends_a_loop_and_returns() -> None:
    task = asyncio.create_task(asyncio.Event().wait())  # a loop that never ends by itself
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.cancelled()
    await stop_task(None)  # nothing started: nothing to do


async def test_a_stop_that_is_cancelled_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # cleanup that takes a while
            raise

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_task(task))
    await asyncio.sleep(0.01)
    stopper.cancel()  # e.g. a shutdown deadline passed
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopper
