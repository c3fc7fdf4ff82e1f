"""Sub-commands of the reputation loop: alerts, alerts ack, report weekly, reputation import.

Formatting only: listing and acknowledging go through agent.alerts.service, the report through
agent.outcomes.report, the import through the reputation scanner.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from agent.cli import offline
from agent.errors import BadRequest, UnknownNumber

if TYPE_CHECKING:  # the handlers import what they use: `trustline --help` stays light
    from agent.settings import Settings
    from agent.store import Database


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from agent.cli import common_options

    common = [common_options()]
    p = sub.add_parser("alerts", parents=common, help="alert incidents, newest last")
    p.add_argument("--open", action="store_true", help="only those not resolved")
    p.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    p.set_defaults(handler=_alerts)
    acts = p.add_subparsers(dest="alerts_command", metavar="ack")
    ack = acts.add_parser("ack", parents=common, help="acknowledge an incident (it stays open)")
    ack.add_argument("id", type=int)
    ack.set_defaults(handler=_ack)

    p = sub.add_parser("report", parents=common, help="reports")
    kinds = p.add_subparsers(dest="report_kind", required=True, metavar="weekly")
    weekly = kinds.add_parser(
        "weekly", parents=common, help="HTML and CSV of one ISO week (default: last week)"
    )
    weekly.add_argument("--week", help="YYYY-Www, e.g. 2026-W48")
    weekly.add_argument("--out", help="folder to write to (default: DATA_DIR/reports)")
    weekly.set_defaults(handler=_weekly)

    p = sub.add_parser("reputation", parents=common, help="reputation lists")
    acts = p.add_subparsers(dest="reputation_command", required=True, metavar="import")
    imp = acts.add_parser(
        "import", parents=common, help="import a vendor's CSV list (number[,score][,label])"
    )
    imp.add_argument("file")
    imp.set_defaults(handler=_import)


async def _store(settings: Settings) -> Database:
    from agent.cli.offline import open_admin_store

    return await open_admin_store(settings)  # the agent's store; an admin command makes none


async def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    async with offline.build(settings, key=b"") as build:
        incidents = await build.alerts().incidents(open_only=args.open)
    if args.json:
        for incident in incidents:
            print(json.dumps(incident.as_dict(), sort_keys=True))
        return 0
    if not incidents:
        print("no open alerts" if args.open else "no alerts")
        return 0
    rows = [
        (
            str(i.id),
            i.kind,
            i.subject,
            i.severity,
            _when(i.first_seen),
            "open" if i.resolved_at is None else f"resolved {_when(i.resolved_at)}",
            "yes" if i.acked_at else "",
            str(i.payload.get("message", "")),
        )
        for i in incidents
    ]
    headers = ("ID", "KIND", "SUBJECT", "SEVERITY", "FIRST SEEN", "STATE", "ACK", "MESSAGE")
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _read_list(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # OSError: exit 74 with the file named
    except UnicodeDecodeError:
        raise BadRequest(f"{path}: not UTF-8 text") from None


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _ack(args: argparse.Namespace, settings: Settings) -> int:
    async with offline.build(settings, key=b"") as build:
        found = await build.alerts().ack(args.id)
    if not found:
        raise BadRequest(f"no alert with id {args.id}")
    print(f"alert {args.id} acknowledged")
    return 0


async def _weekly(args: argparse.Namespace, settings: Settings) -> int:
    from agent.clock import SystemClock
    from agent.config import load_config
    from agent.outbound.policy import local_day
    from agent.outcomes import report

    config = load_config(settings.config)
    if args.week:
        monday = report.parse_week(args.week)
    else:
        today = local_day(SystemClock().now(), ZoneInfo(config.raw.defaults.timezone))
        monday = today - timedelta(days=today.weekday() + 7)
    out = Path(args.out) if args.out else settings.data_dir / "reports"
    db = await _store(settings)
    try:
        week = await report.gather(db, config, monday)
    finally:
        await db.close()
    html_path, csv_path = report.write_report(week, out)
    print(f"{week.week}: {week.calls} calls; wrote {html_path} and {csv_path}")
    return 0


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    from agent.config import load_config
    from agent.reputation.providers import parse_vendor_csv

    config = load_config(settings.config)
    path = Path(args.file)
    text = _read_list(path)
    verdicts = parse_vendor_csv(text, config.default_region)
    numbers = {n: c.pool for n, c in config.numbers.items()}
    async with offline.build(settings, key=b"") as build:
        scanner = build.scanner(build.alerts())
        scanner.configure(numbers, {}, None)  # record the verdicts; no pool policy to apply
        ours, others = await scanner.record(verdicts, f"csv:{path.name}")
    if not ours and verdicts:
        raise UnknownNumber(f"{path}: none of its {others} numbers is one of ours")
    flagged = sum(1 for v in verdicts if v.flagged and v.number in numbers)
    print(f"{path.name}: {ours} of our numbers ({flagged} flagged), {others} others ignored")
    return 0
