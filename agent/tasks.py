"""Background tasks: stopping one the same way everywhere.

A feature's loop (deliverer, scanner, outbox, report) runs as an asyncio task and is stopped by
cancelling it and waiting for it to end. The CancelledError that ends it is its own and is not
passed on, unless the task stopping it is itself being cancelled: that one is re-raised, never
swallowed. No other state here.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
