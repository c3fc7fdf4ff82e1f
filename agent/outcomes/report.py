"""The weekly report: answer rates, spam reports, pool changes, incidents, capacity; HTML + CSV.

May: read the week's outcomes (through agent.outcomes.repo, grouped exactly as ``trustline stats``
groups them), alert incidents and the outbound tables (read only), and write two files.
Must not: show a patient's number or hash (call rows carry only our caller ID; incidents name
our own numbers and pools), fetch anything from the network (charts are inline SVG, no CDN),
or write to the store.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.alerts.repo import AlertRepo, Incident
from agent.config import Config
from agent.errors import BadRequest
from agent.outbound.reads import activity_between
from agent.outcomes import report_html
from agent.outcomes.repo import OutcomeRepo
from agent.outcomes.stats import AnswerStats, aggregate
from agent.store import Database

SPAM_GOAL = 0.001  # spam reports per call: the centres' goal is under 0.1 %


@dataclass(frozen=True, slots=True)
class Capacity:
    pool: str
    usable_numbers: int
    daily_capacity: int  # sum of the usable numbers' caps
    busiest_day: date | None
    busiest_calls: int

    @property
    def headroom(self) -> int:
        return self.daily_capacity - self.busiest_calls


@dataclass(slots=True)
class WeekReport:
    week: str  # ISO week, "2026-W48"
    first: date
    last: date
    pools: list[AnswerStats]  # per pool per day
    numbers: list[AnswerStats]  # per number per day
    spam_reports: int = 0
    rested: int = 0
    quarantined: int = 0
    promoted: int = 0
    incidents: list[Incident] = field(default_factory=list)
    capacity: list[Capacity] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(s.dialled + s.unseen for s in self.pools)

    @property
    def dialled(self) -> int:
        return sum(s.dialled for s in self.pools)

    @property
    def answered(self) -> int:
        return sum(s.answered for s in self.pools)

    @property
    def spam_rate(self) -> float | None:
        return self.spam_reports / self.calls if self.calls else None


def parse_week(text: str) -> date:
    """The Monday of ISO week ``YYYY-Www``."""
    try:
        year, _, week = text.upper().partition("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    except ValueError:
        raise BadRequest(f"--week: expected YYYY-Www such as 2026-W48, got {text!r}") from None


def week_of(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


async def gather(db: Database, config: Config, monday: date) -> WeekReport:
    default_zone = ZoneInfo(config.raw.defaults.timezone)

    def zone_of(pool: str) -> ZoneInfo:
        found = config.pools.get(pool)
        return found.rules.timezone if found is not None else default_zone

    first, last = monday, monday + timedelta(days=6)
    # As `trustline stats`: a day wider on each side in UTC, trimmed to each pool's local days.
    rows = await OutcomeRepo(db).outcomes(
        _epoch(first - timedelta(days=1)), _epoch(last + timedelta(days=2))
    )
    report = WeekReport(
        week_of(monday),
        first,
        last,
        aggregate(rows, zone_of, by_number=False, first=first, last=last),
        aggregate(rows, zone_of, by_number=True, first=first, last=last),
    )
    since = datetime.combine(first, datetime.min.time(), default_zone).timestamp()
    until = datetime.combine(
        last + timedelta(days=1), datetime.min.time(), default_zone
    ).timestamp()
    # Outbound's and alerts' tables, through the named reads their owners publish.
    activity = await activity_between(db, since, until)
    report.spam_reports, report.rested = activity.spam_reports, activity.rested
    report.quarantined, report.promoted = activity.quarantined, activity.promoted
    report.incidents = await AlertRepo(db).incidents_between(since, until)
    report.capacity = _capacity(config, report.pools)
    return report


def _capacity(config: Config, pools: list[AnswerStats]) -> list[Capacity]:
    per_day: dict[str, dict[date, int]] = defaultdict(dict)
    for s in pools:
        per_day[s.pool][s.day] = s.dialled + s.unseen
    out = []
    for pool in config.pools.values():
        if pool.reserve:
            continue
        usable = [n for n in pool.numbers if n.active]
        days = per_day.get(pool.name, {})
        busiest = max(days, key=days.__getitem__) if days else None
        out.append(
            Capacity(
                pool.name,
                len(usable),
                sum(n.daily_cap for n in usable),
                busiest,
                days[busiest] if busiest else 0,
            )
        )
    return out


def detect_minutes(incident: Incident) -> float | None:
    """Time to detect: from when the statistic left zero (drift evidence) to the alert."""
    since = incident.payload.get("since")
    if not isinstance(since, int | float):
        return None
    return max(0.0, (incident.first_seen - since) / 60.0)


CSV_COLUMNS = (
    "day", "pool", "number", "dialled", "answered", "busy", "no_answer", "failed", "unseen",
    "talk_seconds", "answer_rate",
)  # fmt: skip


def render_csv(report: WeekReport) -> str:
    """One row per pool per day (number empty), then one per number per day: the columns and
    figures of ``trustline stats --json`` (and ``--by-number``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for s in [*report.pools, *report.numbers]:
        writer.writerow({k: ("" if v is None else v) for k, v in s.as_dict().items()})
    return buf.getvalue()


def write_report(report: WeekReport, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path = out_dir / f"trustline-{report.week}.html"
    csv_path = out_dir / f"trustline-{report.week}.csv"
    for path, text in ((html_path, report_html.render(report)), (csv_path, render_csv(report))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a reader never sees half a report
    return html_path, csv_path


def summary(report: WeekReport) -> dict[str, object]:
    """The figures posted to the webhooks with the report."""
    rate = report.answered / report.dialled if report.dialled else None
    return {
        "week": report.week,
        "calls": report.calls,
        "answer_rate": None if rate is None else round(rate, 4),
        "spam_reports": report.spam_reports,
        "spam_rate": None if report.spam_rate is None else round(report.spam_rate, 5),
        "spam_goal_met": report.spam_rate is None or report.spam_rate < SPAM_GOAL,
        "rested": report.rested,
        "quarantined": report.quarantined,
        "promoted": report.promoted,
        "incidents": len(report.incidents),
    }


def next_report_at(now: float, zone: ZoneInfo) -> float:
    """Monday 07:00 in ``zone``, strictly after ``now``."""
    local = datetime.fromtimestamp(now, zone)
    monday = local.date() - timedelta(days=local.weekday())
    for week in (0, 1):
        at = datetime.combine(monday + timedelta(weeks=week), datetime.min.time(), zone).replace(
            hour=7
        )
        if at.timestamp() > now:
            return at.timestamp()
    raise AssertionError("unreachable")
