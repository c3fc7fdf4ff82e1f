"""pools.toml's numbers once resolved, kept in columns: one table for the whole file rather
than an object per number (at 100,000 numbers an object, a dict entry and a tuple slot each
came to ~11 MB; the columns take ~3 MB, the E.164 strings being shared with the outbound view).

``NumberTable`` is ``Config.numbers``: a read-only mapping E.164 -> NumberConfig in the order
the file lists them, pool after pool; a NumberConfig is made when one is asked for, and
``rows()`` walks the columns without making any. ``PoolNumbers`` is one pool's slice of it
(``PoolConfig.numbers``), a sequence of NumberConfig. ``PoolColumns`` is what reading one
pool's entries makes (``read_pool``, for agent/config.py) and what agent/config_cache.py keeps.

No I/O; immutable once built (the sorted index used for look-ups is made on the first one).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import ItemsView, Iterator, Mapping, Sequence, ValuesView
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import overload

from agent import phone
from agent.config_errors import Loc, Problems, path_of
from agent.config_schema import PoolHeader, PoolSection


@dataclass(frozen=True, slots=True)
class NumberConfig:
    number: str  # E.164
    name: str
    daily_cap: int
    active: bool
    pool: str


@dataclass(slots=True)
class PoolColumns:
    """One pool's numbers as read, in the order listed."""

    numbers: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    caps: list[int] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.numbers)

    def add(self, number: str, name: str, cap: int, active: bool) -> None:
        self.numbers.append(number)
        self.names.append(name)
        self.caps.append(cap)
        self.active.append(active)

    def name_of(self, number: str) -> str | None:
        """The caller name listed with ``number``, or None when the pool does not list it."""
        try:
            return self.names[self.numbers.index(number)]
        except ValueError:
            return None


# (number, pool, name, daily cap, active): a number as rows() gives it, without an object.
NumberRow = tuple[str, str, str, int, bool]


class NumberTable(Mapping[str, NumberConfig]):
    """Every number of the file, E.164 -> NumberConfig, in columns."""

    __slots__ = ("_active", "_caps", "_names", "_numbers", "_order", "_pools", "_starts")

    def __init__(self, pools: Mapping[str, PoolColumns]) -> None:
        numbers: list[str] = []
        names: list[str] = []
        caps: list[int] = []
        self._active = bytearray()
        self._starts = array("q")  # where each pool's numbers start
        for columns in pools.values():
            self._starts.append(len(numbers))
            numbers += columns.numbers
            names += columns.names
            caps += columns.caps
            self._active.extend(columns.active)
        self._numbers = tuple(numbers)
        self._names = tuple(names)
        # One int per distinct cap, shared with the view's states (not 100,000 of 32 B each).
        shared: dict[int, int] = {}
        self._caps = tuple(shared.setdefault(cap, cap) for cap in caps)
        self._pools = tuple(pools)
        self._order: array[int] | None = None  # positions by number, made on the first look-up

    # -- Mapping -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._numbers)

    def __contains__(self, number: object) -> bool:
        return self._position(number) >= 0

    def __getitem__(self, number: str) -> NumberConfig:
        at = self._position(number)
        if at < 0:
            raise KeyError(number)
        return self.at(at)

    def values(self) -> ValuesView[NumberConfig]:
        return _Values(self)

    def items(self) -> ItemsView[str, NumberConfig]:
        return _Items(self)

    def __repr__(self) -> str:
        return f"NumberTable({len(self)} numbers in {len(self._pools)} pools)"

    # -- columns -----------------------------------------------------------------------------
    def at(self, position: int) -> NumberConfig:
        pool = self._pools[bisect_right(self._starts, position) - 1]
        return NumberConfig(
            self._numbers[position],
            self._names[position],
            self._caps[position],
            bool(self._active[position]),
            pool,
        )

    def rows(self) -> Iterator[NumberRow]:
        """(number, pool, name, daily cap, active) of every number, in order: no object made
        per number (the outbound view reads 100,000 of them at every start)."""
        for i, pool in enumerate(self._pools):
            start, stop = self._span(i)
            yield from zip(
                islice(self._numbers, start, stop),
                repeat(pool),
                islice(self._names, start, stop),
                islice(self._caps, start, stop),
                map(bool, islice(self._active, start, stop)),
            )

    def pool(self, name: str) -> PoolNumbers:
        start, stop = self._span(self._pools.index(name))
        return PoolNumbers(self, start, stop)

    def _span(self, index: int) -> tuple[int, int]:
        stop = self._starts[index + 1] if index + 1 < len(self._starts) else len(self._numbers)
        return self._starts[index], stop

    def _position(self, number: object) -> int:
        if not isinstance(number, str):
            return -1
        if self._order is None:
            numbers = self._numbers
            self._order = array("q", sorted(range(len(numbers)), key=numbers.__getitem__))
        order = self._order
        i = bisect_left(order, number, key=self._numbers.__getitem__)
        if i < len(order) and self._numbers[order[i]] == number:
            return order[i]
        return -1


class _Values(ValuesView[NumberConfig]):
    _mapping: NumberTable

    def __iter__(self) -> Iterator[NumberConfig]:
        table = self._mapping
        return (table.at(i) for i in range(len(table)))


class _Items(ItemsView[str, NumberConfig]):
    _mapping: NumberTable

    def __iter__(self) -> Iterator[tuple[str, NumberConfig]]:
        table = self._mapping
        return ((n.number, n) for n in (table.at(i) for i in range(len(table))))


class PoolNumbers(Sequence[NumberConfig]):
    """One pool's numbers, in the order listed: a slice of the file's table."""

    __slots__ = ("_start", "_stop", "_table")

    def __init__(self, table: NumberTable, start: int, stop: int) -> None:
        self._table, self._start, self._stop = table, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> NumberConfig: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[NumberConfig, ...]: ...
    def __getitem__(self, index: int | slice) -> NumberConfig | tuple[NumberConfig, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("pool number index out of range")
        return self._table.at(self._start + index)

    def __iter__(self) -> Iterator[NumberConfig]:
        return (self._table.at(i) for i in range(self._start, self._stop))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PoolNumbers({list(self)!r})"


def read_pool(
    section: PoolHeader,
    pool_name: str,
    region: str | None,
    default_cap: int,
    seen_at: dict[str, Loc],
    names: dict[str, str],
    problems: Problems,
) -> PoolColumns:
    """The pool's numbers in E.164; each number once in the whole file (``seen_at``: number
    -> where it was first listed). Nothing without a region to read them in."""
    found = PoolColumns()
    if region is None or not isinstance(section, PoolSection):
        return found
    for i, entry in enumerate(section.numbers):
        nloc: Loc = ("pools", pool_name, "numbers", i, "number")
        try:
            e164 = phone.listed_e164(entry.number, region)
        except phone.InvalidNumber as exc:
            problems.add(nloc, f"{entry.number!r} is not a valid number ({exc})")
            continue
        if e164 in seen_at:
            problems.add(nloc, f"{e164} is already listed at {path_of(seen_at[e164])}")
            continue
        seen_at[e164] = nloc
        name = names.setdefault(entry.name, entry.name)
        found.add(e164, name, entry.daily_cap or default_cap, entry.active)
    return found


def fallback_of(
    section: PoolHeader,
    columns: PoolColumns,
    region: str,
    where: Loc,
    problems: Problems,
    own_numbers: tuple[str, ...],
    *,
    judge: bool = True,
) -> tuple[str, str]:
    """The caller ID of an exhausted pool: one of its numbers, or a declared own number (a
    switchboard), never a number the centre has not said is its own."""
    default_name = columns.names[0] if columns.numbers else ""
    if section.fallback is None:
        return (columns.numbers[0], default_name) if columns.numbers else ("", "")
    loc = (*where, "fallback")
    try:
        e164 = phone.to_e164(section.fallback, region)
    except phone.InvalidNumber as exc:
        problems.add(loc, f"{section.fallback!r} is not a valid number ({exc})")
        return "", ""
    own = columns.name_of(e164)
    if judge and own is None and e164 not in own_numbers:
        problems.add(
            loc,
            f"{e164} is not one of this pool's numbers; to present another number of the "
            "centre (a switchboard), declare it in [screening] own_numbers",
        )
    return e164, own if own is not None else default_name
