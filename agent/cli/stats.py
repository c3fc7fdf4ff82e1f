"""Sub-command ``trustline stats``: answer rate per pool (or per number) per day.

Reads outcomes the AMI link stored; prints a table or JSON. No logic beyond formatting:
grouping lives in agent.outcomes.stats.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from agent.cli import add_json_flag, common_options, offline
from agent.errors import BadRequest

if TYPE_CHECKING:
    from agent.outcomes.stats import AnswerStats
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "stats",
        parents=[common_options()],
        help="answer rate per pool (or per number) per day, from call outcomes seen over AMI",
        epilog="UNRATED (JSON: unseen) counts calls that say nothing about the number and stay"
        " out of the answer rate: hung up before Dial, cancelled by our side while ringing, or"
        " ended while AMI was down.",
    )
    p.add_argument(
        "--days", type=int, default=7, help="the last N days, today included (default 7)"
    )
    p.add_argument("--from", dest="first", help="first day, YYYY-MM-DD (pool's local day)")
    p.add_argument("--to", dest="last", help="last day, YYYY-MM-DD (default: --from or today)")
    p.add_argument("--pool", help="only this pool")
    p.add_argument("--by-number", action="store_true", help="one line per number, not per pool")
    add_json_flag(p)
    p.set_defaults(handler=_stats)


def _day(text: str, flag: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{flag}: expected YYYY-MM-DD, got {text!r}") from None


async def _stats(args: argparse.Namespace, settings: Settings) -> int:
    from zoneinfo import ZoneInfo

    from agent.clock import SystemClock
    from agent.outbound.policy import local_day
    from agent.outcomes.repo import OutcomeRepo
    from agent.outcomes.stats import aggregate

    config = offline.pools(settings, "stats")
    default_zone = ZoneInfo(config.raw.defaults.timezone)

    def zone_of(pool: str) -> ZoneInfo:
        found = config.pools.get(pool)
        return found.rules.timezone if found is not None else default_zone

    if args.first:
        first = _day(args.first, "--from")
        last = _day(args.last, "--to") if args.last else first
    else:
        if args.days < 1:
            raise BadRequest("--days: must be at least 1")
        last = (
            _day(args.last, "--to") if args.last else local_day(SystemClock().now(), default_zone)
        )
        first = last - timedelta(days=args.days - 1)
    if last < first:
        raise BadRequest("--to is before --from")
    # A day wider on each side in UTC covers every pool's time zone; aggregate trims.
    since = _epoch(first - timedelta(days=1))
    until = _epoch(last + timedelta(days=2))
    async with offline.admin_store(settings) as db:
        rows = await OutcomeRepo(db).outcomes(since, until, args.pool)
    stats = aggregate(rows, zone_of, by_number=args.by_number, first=first, last=last)
    if args.json:
        for s in stats:
            print(json.dumps(s.as_dict()))
    else:
        _print_table(stats, args.by_number)
    return 0


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _print_table(stats: list[AnswerStats], by_number: bool) -> None:
    headers = [
        "DAY",
        "POOL",
        *(["NUMBER"] if by_number else []),
        "DIALLED",
        "ANSWERED",
        "BUSY",
        "NO ANSWER",
        "FAILED",
        "ANSWER RATE",
        "TALK",
        "UNRATED",
    ]
    table = []
    for s in stats:
        rate = "-" if s.answer_rate is None else f"{s.answer_rate:.0%}"
        table.append(
            [
                s.day.isoformat(),
                s.pool,
                *([s.number] if by_number else []),
                str(s.dialled),
                str(s.answered),
                str(s.busy),
                str(s.no_answer),
                str(s.failed),
                rate,
                f"{s.talk_seconds}s",
                str(s.unseen),
            ]
        )
    if not table:
        print("no call outcomes in that period (is TRUSTLINE_AMI_USER set on the agent?)")
        return
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    for row in (headers, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
