"""Read-only queries behind the dashboard's pages: outcome counts per day (or hour), reports,
rests, quarantines, screening verdicts. A reporting read model: it reads other features'
tables, for display only, and never writes.

Counting happens in SQL (one GROUP BY per page, on indexed time ranges), never in a Python
loop over rows, so a page costs the same with a year of outcomes as with a week. Run it on a
read connection of its own (``app.py`` opens one): on SQLite (WAL) its queries never queue in
front of the call path's claims. Bucket bounds are computed here in each pool's time zone, so
SQL stays portable (no time-zone functions). Must not: show a patient's number (screening
decisions hold only a hash and a masked form; list entries are masked by the HTTP edge).
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from zoneinfo import ZoneInfo

from agent.outcomes.repo import DIALLED_OUTCOMES
from agent.store import Database

DIALLED = frozenset(DIALLED_OUTCOMES)


def day_bounds(zone: ZoneInfo, first: date, days: int) -> list[float]:
    """UTC instants of the local midnights starting ``first`` and each following day, plus
    the end of the last day: ``days + 1`` bounds (DST days are 23 or 25 hours long)."""
    return [
        datetime.combine(first + timedelta(days=i), time(0), zone).timestamp()
        for i in range(days + 1)
    ]


def hour_bounds(zone: ZoneInfo, day: date) -> list[float]:
    start = datetime.combine(day, time(0), zone).timestamp()
    end = datetime.combine(day + timedelta(days=1), time(0), zone).timestamp()
    bounds = [start + 3600.0 * h for h in range(25) if start + 3600.0 * h < end]
    return [*bounds, end] if bounds[-1] != end else bounds


@dataclass(slots=True)
class Counts:
    """Outcomes of calls in one bucket (a day or an hour)."""

    outcomes: dict[str, int] = field(default_factory=dict)
    talk_seconds: int = 0

    @property
    def dialled(self) -> int:
        return sum(n for o, n in self.outcomes.items() if o in DIALLED)

    @property
    def answered(self) -> int:
        return self.outcomes.get("answered", 0)

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def answer_rate(self) -> float | None:
        dialled = self.dialled
        return self.answered / dialled if dialled else None

    def add(self, other: Counts) -> None:
        for outcome, n in other.outcomes.items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n
        self.talk_seconds += other.talk_seconds


# (bucket index, pool, number) -> counts
Buckets = dict[tuple[int, str, str], Counts]


def merged(buckets: Buckets, *, pool: str | None = None, number: str | None = None) -> list[Counts]:
    """Counts per bucket index over the matching pools/numbers (index order, gaps empty)."""
    size = 1 + max((k[0] for k in buckets), default=-1)
    out = [Counts() for _ in range(size)]
    for (i, p, n), counts in buckets.items():
        if (pool is None or p == pool) and (number is None or n == number):
            out[i].add(counts)
    return out


@dataclass(frozen=True, slots=True)
class ReportRow:
    at: float
    source: str


@dataclass(frozen=True, slots=True)
class HistoryRow:
    at: float
    what: str
    who: str


def _utc(ts: object) -> str:
    return datetime.fromtimestamp(float(str(ts)), UTC).strftime("%Y-%m-%d %H:%MZ")


HISTORY_TTL = 300.0  # closed days change only by late outcomes: re-read every 5 minutes
HISTORY_ENTRIES = 256


class DashboardViews:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._history: OrderedDict[tuple[object, ...], tuple[float, Buckets]] = OrderedDict()

    async def recent_buckets(
        self,
        bounds: Sequence[float],
        *,
        pools: Sequence[str] | None = None,
        number: str | None = None,
    ) -> Buckets:
        """``outcome_buckets`` where the last bucket is the one still filling (today): the
        closed buckets before it come from a short-lived cache, only the last is read live,
        so a page over 30 days reads one day of rows, not thirty."""
        if len(bounds) < 3:
            return await self.outcome_buckets(bounds, pools=pools, number=number)
        closed = tuple(bounds[:-1])
        key = (closed, tuple(pools) if pools is not None else None, number)
        found = self._history.get(key)
        if found is None or monotonic() - found[0] > HISTORY_TTL:
            found = (
                monotonic(),
                await self.outcome_buckets(closed, pools=pools, number=number),
            )
            self._history[key] = found
            while len(self._history) > HISTORY_ENTRIES:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(key)
        live = await self.outcome_buckets(bounds[-2:], pools=pools, number=number)
        last = len(bounds) - 2
        return {**found[1], **{(last, p, n): c for (_, p, n), c in live.items()}}

    async def outcome_buckets(
        self,
        bounds: Sequence[float],
        *,
        pools: Sequence[str] | None = None,
        number: str | None = None,
    ) -> Buckets:
        """Outcome counts of stored calls per [bounds[i], bounds[i+1]) bucket, pool and
        number. One statement; the bucket is a CASE over the bounds."""
        if len(bounds) < 2:
            return {}
        cases = " ".join(f"WHEN at < ? THEN {i}" for i in range(len(bounds) - 1))
        sql = (
            f"SELECT CASE {cases} END AS bucket, COALESCE(pool, '-'), COALESCE(number, '-'),"
            " outcome, COUNT(*), SUM(COALESCE(talk_seconds, 0)) FROM call_audit"
            " WHERE at >= ? AND at < ? AND outcome IS NOT NULL"
        )
        params: list[object] = [*bounds[1:], bounds[0], bounds[-1]]
        if number is not None:
            sql += " AND number = ?"
            params.append(number)
        if pools is not None:
            if not pools:
                return {}
            sql += f" AND pool IN ({','.join('?' for _ in pools)})"
            params += pools
        sql += " GROUP BY bucket, pool, number, outcome"
        buckets: Buckets = {}
        for r in await self._db.fetchall(sql, params):
            key = (int(r[0]), str(r[1]), str(r[2]))
            counts = buckets.get(key)
            if counts is None:
                counts = buckets[key] = Counts()
            counts.outcomes[str(r[3])] = counts.outcomes.get(str(r[3]), 0) + int(r[4])
            counts.talk_seconds += int(r[5] or 0)
        return buckets

    async def reports(self, number: str, limit: int = 50) -> list[ReportRow]:
        rows = await self._db.fetchall(
            "SELECT reported_at, source FROM spam_reports WHERE number = ?"
            " ORDER BY reported_at DESC LIMIT ?",
            (number, limit),
        )
        return [ReportRow(float(r[0]), str(r[1])) for r in rows]

    async def reports_today(self, day: str) -> dict[str, int]:
        rows = await self._db.fetchall(
            "SELECT number, COUNT(*) FROM spam_reports WHERE day = ? AND ours = 1 GROUP BY number",
            (day,),
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def until(self, now: float) -> dict[str, tuple[str, float]]:
        """Numbers quarantined or resting now: number -> (state, until)."""
        found: dict[str, tuple[str, float]] = {}
        for r in await self._db.fetchall(
            "SELECT number, MAX(ends_at) FROM rests WHERE starts_at <= ? AND ends_at > ?"
            " GROUP BY number",
            (now, now),
        ):
            found[str(r[0])] = ("resting", float(r[1]))
        for r in await self._db.fetchall(
            "SELECT number, until FROM quarantines WHERE until > ?", (now,)
        ):
            found[str(r[0])] = ("quarantined", float(r[1]))
        return found

    async def history(self, number: str, limit: int = 50) -> list[HistoryRow]:
        """State changes of one number, newest first: rests, quarantine, admin actions."""
        rows: list[HistoryRow] = []
        for r in await self._db.fetchall(
            "SELECT starts_at, ends_at, reason FROM rests WHERE number = ?"
            " ORDER BY starts_at DESC LIMIT ?",
            (number, limit),
        ):
            rows.append(HistoryRow(float(r[0]), f"rest until {_utc(r[1])} ({r[2]})", "agent"))
        for r in await self._db.fetchall(
            "SELECT since, until, reason FROM quarantines WHERE number = ?", (number,)
        ):
            rows.append(
                HistoryRow(float(r[0]), f"quarantined until {_utc(r[1])} ({r[2]})", "agent")
            )
        for r in await self._db.fetchall(
            "SELECT at, actor, action FROM admin_audit WHERE target = ? ORDER BY id DESC LIMIT ?",
            (number, limit),
        ):
            rows.append(HistoryRow(float(r[0]), str(r[2]), str(r[1])))
        rows.sort(key=lambda h: h.at, reverse=True)
        return rows[:limit]

    async def verdicts(self, bounds: Sequence[float]) -> dict[int, dict[str, int]]:
        """Screening verdicts per bucket: index -> verdict -> count."""
        if len(bounds) < 2:
            return {}
        cases = " ".join(f"WHEN at < ? THEN {i}" for i in range(len(bounds) - 1))
        out: dict[int, dict[str, int]] = defaultdict(dict)
        for r in await self._db.fetchall(
            f"SELECT CASE {cases} END AS bucket, verdict, COUNT(*) FROM screening_decisions"
            " WHERE at >= ? AND at < ? GROUP BY bucket, verdict",
            [*bounds[1:], bounds[0], bounds[-1]],
        ):
            out[int(r[0])][str(r[1])] = int(r[2])
        return dict(out)

    async def top_reasons(self, since: float, limit: int = 10) -> list[tuple[str, int]]:
        """Reason codes by how many decisions since ``since`` gave them, most first."""
        counts: dict[str, int] = defaultdict(int)
        for r in await self._db.fetchall(
            "SELECT reasons, COUNT(*) FROM screening_decisions WHERE at >= ? GROUP BY reasons",
            (since,),
        ):
            for reason in str(r[0]).split(","):
                if reason.strip():
                    counts[reason.strip()] += int(r[1])
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
