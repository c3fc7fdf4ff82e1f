"""Sliding windows in memory for bursts (one caller) and floods (many callers, one line).

Keys are keyed hashes, never plain numbers. Memory stays bounded: entries older than the
window are dropped as time moves on (least recently seen first), so a caller seen once an
hour ago costs nothing. Single event loop: no locks, no awaits inside.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict


class BurstCounter:
    """How many calls one key made within the last ``window`` seconds."""

    # A caller with more calls than this in the window is a burst under any sane limit.
    MAX_KEPT = 256

    def __init__(self) -> None:
        # Times as exact tuples of floats: the garbage collector does not walk those, and a
        # window may hold tens of thousands of callers.
        self._calls: OrderedDict[str, tuple[float, ...]] = OrderedDict()

    def record(self, key: str, now: float, window: float) -> int:
        """Count this call and return the calls of ``key`` in the window, this one included."""
        self._expire(now, window)
        start = now - window
        times = self._calls.pop(key, ())
        # Times are kept sorted, so the ones in the window are a tail found by bisection: a
        # caller with hundreds of calls in the window (a robocaller) costs no more than two.
        first = max(bisect.bisect_right(times, start), len(times) - (self.MAX_KEPT - 1))
        kept = times[first:]
        if kept and now < kept[-1]:  # the clock stepped back: keep them sorted
            kept = tuple(sorted((*kept, now)))
        else:
            kept = (*kept, now)
        self._calls[key] = kept  # re-inserted last: the order stays least recently seen first
        return len(kept)

    def _expire(self, now: float, window: float) -> None:
        # The least recently seen key has the oldest newest call: once it is inside the window,
        # every later key is too.
        while self._calls:
            key, times = next(iter(self._calls.items()))
            if times and times[-1] > now - window:
                break
            del self._calls[key]

    def __len__(self) -> int:
        return len(self._calls)


class FloodCounter:
    """How many distinct callers reached one line within the last ``window`` seconds."""

    # Lines are our DIDs, but the dialplan decides what it passes: quiet lines are forgotten
    # once this many are tracked.
    MAX_LINES = 1024

    def __init__(self) -> None:
        self._lines: dict[str, OrderedDict[str, float]] = {}

    def record(self, line: str, caller: str, now: float, window: float) -> int:
        seen = self._lines.get(line)
        if seen is None:
            if len(self._lines) >= self.MAX_LINES:
                self._forget_quiet_lines(now, window)
            if len(self._lines) >= self.MAX_LINES:
                # Every line is busy: forget the one whose newest call is oldest, so that
                # MAX_LINES is a cap whatever the dialplan passes as the line.
                del self._lines[min(self._lines, key=lambda k: _newest(self._lines[k]))]
            seen = self._lines[line] = OrderedDict()
        seen[caller] = now
        seen.move_to_end(caller)
        _expire(seen, now, window)
        return len(seen)

    def _forget_quiet_lines(self, now: float, window: float) -> None:
        for line in list(self._lines):
            seen = self._lines[line]
            _expire(seen, now, window)
            if not seen:
                del self._lines[line]

    def __len__(self) -> int:
        return sum(len(v) for v in self._lines.values())


def _newest(seen: OrderedDict[str, float]) -> float:
    return next(reversed(seen.values())) if seen else float("-inf")


def _expire(seen: OrderedDict[str, float], now: float, window: float) -> None:
    """Drop callers last seen before the window (oldest first, as they were inserted)."""
    while seen:
        oldest_at = next(iter(seen.values()))
        if oldest_at > now - window:
            break
        seen.popitem(last=False)
