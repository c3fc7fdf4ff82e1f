"""Answer rates per pool or per number per day, from stored outcomes. Pure: no I/O.

A day is the pool's local calendar day (as for caps). The rate's denominator is the calls
whose callee side we know (answered, busy, no answer, congestion, ...); calls hung up before
Dial, cancelled by our side while ringing, or ended while AMI was down are counted apart
("unrated"), never as failures of the number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from agent.outcomes.repo import DIALLED_OUTCOMES, OutcomeRow

_FAILED = frozenset(DIALLED_OUTCOMES) - {"answered", "busy", "no_answer"}


@dataclass(slots=True)
class AnswerStats:
    day: date
    pool: str
    number: str  # "" when grouped per pool
    dialled: int = 0
    answered: int = 0
    busy: int = 0
    no_answer: int = 0
    failed: int = 0  # congestion, unavailable, failed
    unseen: int = 0  # not in the rate: not dialled, cancelled by our side, outcome unknown
    talk_seconds: int = 0

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.dialled if self.dialled else None

    def as_dict(self) -> dict[str, object]:
        return {
            "day": self.day.isoformat(),
            "pool": self.pool,
            "number": self.number or None,
            "dialled": self.dialled,
            "answered": self.answered,
            "busy": self.busy,
            "no_answer": self.no_answer,
            "failed": self.failed,
            "unseen": self.unseen,
            "talk_seconds": self.talk_seconds,
            "answer_rate": None if self.answer_rate is None else round(self.answer_rate, 4),
        }


def aggregate(
    rows: Iterable[OutcomeRow],
    zone_of: Callable[[str], ZoneInfo],
    *,
    by_number: bool,
    first: date,
    last: date,
) -> list[AnswerStats]:
    """Group outcomes by (local day, pool[, number]) for days in [first, last]."""
    groups: dict[tuple[date, str, str], AnswerStats] = {}
    for row in rows:
        pool = row.pool or "-"
        day = datetime.fromtimestamp(row.at, zone_of(pool)).date()
        if not first <= day <= last:
            continue
        number = (row.number or "-") if by_number else ""
        key = (day, pool, number)
        stats = groups.get(key)
        if stats is None:
            stats = groups[key] = AnswerStats(day, pool, number)
        outcome = row.outcome
        if outcome not in DIALLED_OUTCOMES:
            stats.unseen += 1
            continue
        stats.dialled += 1
        if outcome == "answered":
            stats.answered += 1
            stats.talk_seconds += row.talk_seconds
        elif outcome == "busy":
            stats.busy += 1
        elif outcome == "no_answer":
            stats.no_answer += 1
        elif outcome in _FAILED:
            stats.failed += 1
    return [groups[k] for k in sorted(groups)]
