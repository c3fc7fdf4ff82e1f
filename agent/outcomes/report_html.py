"""HTML of the weekly report, with its charts drawn here as inline SVG. Pure: text in, text out.

Must not: load anything from elsewhere (no CDN, no script) or print a value unescaped.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import TYPE_CHECKING

from agent.outcomes.stats import AnswerStats

if TYPE_CHECKING:
    from agent.outcomes.report import WeekReport

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _days(report: WeekReport) -> list[date]:
    return [report.first + timedelta(days=i) for i in range((report.last - report.first).days + 1)]


def _series(stats: list[AnswerStats], key: str, days: list[date]) -> dict[str, list[float | None]]:
    rates: dict[str, dict[date, float | None]] = defaultdict(dict)
    for s in stats:
        rates[getattr(s, key)][s.day] = s.answer_rate
    return {name: [by_day.get(d) for d in days] for name, by_day in sorted(rates.items())}


def _points(values: list[float | None], width: float, height: float, pad: float) -> str:
    step = (width - 2 * pad) / max(1, len(values) - 1)
    return " ".join(
        f"{pad + i * step:.1f},{pad + (1 - v) * (height - 2 * pad):.1f}"
        for i, v in enumerate(values)
        if v is not None
    )


def pool_chart(report: WeekReport) -> str:
    days = _days(report)
    series = _series(report.pools, "pool", days)
    w, h, pad = 640.0, 220.0, 30.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}"'
        ' role="img" aria-label="answer rate per pool per day">'
    ]
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = pad + (1 - frac) * (h - 2 * pad)
        parts.append(
            f'<line x1="{pad}" x2="{w - pad}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="2" y="{y + 4:.1f}" font-size="10">{int(frac * 100)}%</text>'
        )
    step = (w - 2 * pad) / max(1, len(days) - 1)
    for i, d in enumerate(days):
        parts.append(
            f'<text x="{pad + i * step - 12:.1f}" y="{h - 8}" font-size="10">{d:%a %d}</text>'
        )
    for n, (pool, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"'
            f' points="{_points(values, w, h, pad)}"><title>{escape(pool)}</title></polyline>'
            f'<text x="{w - pad - 120}" y="{pad + 12 * n}" font-size="11" fill="{colour}">'
            f"{escape(pool)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def sparkline(values: list[float | None]) -> str:
    w, h = 120.0, 24.0
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}">'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5"'
        f' points="{_points(values, w, h, 2.0)}"/></svg>'
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _totals(stats: list[AnswerStats], key: str) -> dict[str, tuple[int, int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in stats:
        t = out[f"{s.pool}\t{s.number}" if key == "number" else s.pool]
        t[0] += s.dialled + s.unseen
        t[1] += s.dialled
        t[2] += s.answered
    return {k: (v[0], v[1], v[2]) for k, v in sorted(out.items())}


def render(report: WeekReport) -> str:
    """The page. Over 60 lines because most of it is the one HTML template: split, the page's
    order would be scattered over several functions."""
    from agent.outcomes.report import SPAM_GOAL, detect_minutes

    days = _days(report)
    rate = report.answered / report.dialled if report.dialled else None
    spam_ok = report.spam_rate is None or report.spam_rate < SPAM_GOAL
    kpis = _table(
        ["calls", "answer rate", "spam reports", "spam-report rate (goal < 0.1%)",
         "rested", "quarantined", "promoted", "incidents"],
        [[str(report.calls), _pct(rate), str(report.spam_reports),
          f"{_pct(report.spam_rate, 3)} {'met' if spam_ok else 'MISSED'}",
          str(report.rested), str(report.quarantined), str(report.promoted),
          str(len(report.incidents))]],
    )  # fmt: skip
    pool_rows = [
        [escape(pool), str(calls), str(dialled), str(answered),
         _pct(answered / dialled if dialled else None)]
        for pool, (calls, dialled, answered) in _totals(report.pools, "pool").items()
    ]  # fmt: skip
    spark = _series(report.numbers, "number", days)
    number_rows = []
    for key, (calls, dialled, answered) in _totals(report.numbers, "number").items():
        pool, number = key.split("\t")
        number_rows.append(
            [escape(pool), escape(number), str(calls), str(dialled), str(answered),
             _pct(answered / dialled if dialled else None), sparkline(spark.get(number, []))]
        )  # fmt: skip
    incident_rows = []
    for i in report.incidents:
        ttd = detect_minutes(i)
        incident_rows.append(
            [str(i.id), escape(i.kind), escape(i.subject), escape(i.severity),
             _utc(i.first_seen), "open" if i.resolved_at is None else _utc(i.resolved_at),
             "-" if ttd is None else f"{ttd:.0f} min",
             escape(str(i.payload.get("message", "")))]
        )  # fmt: skip
    capacity_rows = [
        [escape(c.pool), str(c.usable_numbers), str(c.daily_capacity),
         f"{c.busiest_calls} ({c.busiest_day or '-'})", str(c.headroom)]
        for c in report.capacity
    ]  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Trustline weekly report {escape(report.week)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f4f4f4}}</style>
</head><body>
<h1>Trustline weekly report {escape(report.week)}</h1>
<p>{report.first.isoformat()} to {report.last.isoformat()} (each pool's local days).</p>
<h2>Key figures</h2>{kpis}
<h2>Answer rate per pool per day</h2>{pool_chart(report)}
{_table(["pool", "calls", "dialled", "answered", "answer rate"], pool_rows)}
<h2>Numbers</h2>
{_table(["pool", "number", "calls", "dialled", "answered", "answer rate", "per day"], number_rows)}
<h2>Incidents</h2>
{
        _table(
            [
                "id",
                "kind",
                "subject",
                "severity",
                "first seen",
                "resolved",
                "time to detect",
                "message",
            ],
            incident_rows,
        )
    }
<h2>Capacity headroom</h2>
{_table(["pool", "usable numbers", "calls a day (caps)", "busiest day", "headroom"], capacity_rows)}
</body></html>
"""
