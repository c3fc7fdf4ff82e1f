"""Time as a dependency: services take a Clock so tests can move across days and zones."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FrozenClock:
    """A clock tests set and advance by hand."""

    def __init__(self, start: float | datetime) -> None:
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)

    def now(self) -> float:
        return self._t

    def set(self, when: float | datetime) -> None:
        self._t = when.timestamp() if isinstance(when, datetime) else float(when)

    def advance(self, seconds: float) -> None:
        self._t += seconds


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
