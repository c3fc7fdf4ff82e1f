"""Start-up without the cycle collector, and giving back what it used and dropped once the
agent is ready (``trustline run``).

Reading 100,000 numbers makes and drops millions of small objects and many large lists, none
of them in a cycle: each full collection the allocations set off would walk every object
alive so far, for nothing (about a tenth of a start at 100,000 numbers). ``starting`` pauses
the collector for start-up; ``settle`` collects once, freezes what is left out of the
collector's scans (a full collection never pauses calls), turns the collector back on, then
hands the free memory back: SQLite's page caches, and the free pages of the C heap (glibc's
``malloc_trim``; elsewhere nothing). No state, no effect on what is kept.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Iterator

from agent.store import Database
from agent.store.db import SqliteDatabase

log = logging.getLogger(__name__)


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Start-up with the cycle collector paused; on a failed start it is turned back on here,
    else by ``settle``."""
    gc.disable()
    try:
        yield
    except BaseException:
        gc.enable()
        raise


async def settle(*stores: Database | None) -> None:
    gc.collect()
    gc.freeze()
    gc.enable()
    for store in stores:
        if isinstance(store, SqliteDatabase):
            await store.release_memory()
    trim_heap()


def trim_heap() -> None:
    """Return the C heap's free pages to the system (glibc); a no-op without glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return  # not glibc (musl, macOS): its allocator keeps what it keeps
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
