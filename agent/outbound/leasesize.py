"""How many cap units each busy number's lease holds (the leases themselves: claims.py).

A lease starts at LEASE_UNITS and doubles, up to LEASE_MAX_UNITS, while its number's calls
outrun it, by either sign:
- a refill landed after the calls had spent a quarter of the lease or more (the store or the
  CPU was slow: the calls must not wait for the next refill);
- a refill is asked less than LEASE_REFILL_SECONDS after the number's previous one (its calls
  come fast: each refill is a statement on the store's thread, and at a few hundred calls a
  second per number small leases made the store's thread, and the event loop waiting for it,
  a good part of the agent's CPU). A lease then covers about a second of its number's calls.
Both only ever make a lease bigger than what LEASE_SHARE allows of the cap's rest: the caller
clamps it (NumberState.lease_target). Once its number is idle, a lease is small again.
No I/O, no store, no policy.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.outbound.policy import LEASE_MAX_UNITS, LEASE_REFILL_SECONDS, LEASE_UNITS


class LeaseSizes:
    def __init__(self) -> None:
        self._units: dict[str, int] = {}  # numbers whose lease grew -> its size
        self._asked_at: dict[str, float] = {}  # number -> when its last refill was asked

    def units(self, number: str) -> int:
        return self._units.get(number, LEASE_UNITS)

    def asked(self, number: str, now: float) -> int:
        """A refill is asked for ``number`` at ``now`` (seconds): its lease size from now on."""
        last = self._asked_at.get(number)
        self._asked_at[number] = now
        if last is not None and now - last < LEASE_REFILL_SECONDS:
            self._grow(number)
        return self.units(number)

    def landed(self, number: str, spent: int) -> None:
        """A refill landed after the calls spent ``spent`` units of the lease meanwhile."""
        if spent * 4 >= self.units(number):
            self._grow(number)

    def _grow(self, number: str) -> None:
        lease = self.units(number)
        if lease < LEASE_MAX_UNITS:
            self._units[number] = 2 * lease

    def forget(self, number: str) -> None:
        """``number`` went idle (or left): a small lease when it is busy again."""
        self._units.pop(number, None)
        self._asked_at.pop(number, None)

    def forget_idle(self, busy: Callable[[str], bool]) -> None:
        """Forget every number ``busy`` says is not (its lease ran dry with no refill to come:
        near or at its cap), so a later busy spell (the next day) starts small."""
        for number in [n for n in self._units if not busy(n)]:
            self.forget(number)
        for number in [n for n in self._asked_at if n not in self._units and not busy(n)]:
            del self._asked_at[number]
