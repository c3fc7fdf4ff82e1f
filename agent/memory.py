"""Giving back what start-up used and dropped, once the agent is ready (``trustline run``).

Reading 100,000 numbers makes and drops millions of small objects and many large lists; what
stays (the config, the number view) is spread among the freed memory. This module collects
once, freezes what is left out of the collector's scans (a full collection never pauses
calls), then hands the free memory back: SQLite's page caches, and the free pages of the C
heap (glibc's ``malloc_trim``; elsewhere nothing). No state, no effect on what is kept.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

from agent.store import Database
from agent.store.db import SqliteDatabase

log = logging.getLogger(__name__)


async def settle(*stores: Database | None) -> None:
    gc.collect()
    gc.freeze()
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
