"""Sub-commands: ``optout add|remove|list``, ``explain-call``, ``audit verify|export|purge``.

Translates arguments into ComplianceService / AuditChain calls and prints the results; the
service and the policy decide. Admin changes are recorded in the admin audit with the OS login
(and --operator). Numbers are printed masked (last 4 digits), never whole.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from agent.cli import offline
from agent.errors import BadRequest

if TYPE_CHECKING:  # the handlers import what they use: `trustline --help` stays light
    from agent.compliance.service import ComplianceService
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from agent.cli import common_options  # here: agent.cli imports this module

    common = [common_options()]
    p = sub.add_parser("optout", help="a callee's wish not to be called for a purpose")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in (
        ("add", _optout_add, "never call NUMBER for --purpose again"),
        ("remove", _optout_remove, "lift an opt-out (the callee asked to be called again)"),
    ):
        a = actions.add_parser(name, parents=common, help=text)
        a.add_argument("number")
        a.add_argument("--purpose", required=True)
        a.add_argument("--operator", default="", help="who asks (recorded beside the OS login)")
        a.set_defaults(handler=handler)
    a = actions.add_parser("list", parents=common, help="the purposes NUMBER opted out of")
    a.add_argument("number")
    a.add_argument("--purpose", default="", help="only this purpose")
    a.set_defaults(handler=_optout_list)

    p = sub.add_parser(
        "explain-call", parents=common, help="which compliance rule would stop a call now"
    )
    p.add_argument("--purpose", required=True)
    p.add_argument("--callee", required=True)
    p.set_defaults(handler=_explain)

    p = sub.add_parser("audit", help="the tamper-evident audit trail and retention")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("verify", parents=common, help="prove no audit row was altered")
    a.set_defaults(handler=_verify)
    a = actions.add_parser("export", parents=common, help="calls, admin actions, accesses")
    a.add_argument("--from", dest="since", required=True, type=date.fromisoformat)
    a.add_argument("--to", dest="until", required=True, type=date.fromisoformat)
    a.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    a.add_argument("--out", type=Path, help="file to write (default: standard output)")
    a.set_defaults(handler=_export)
    a = actions.add_parser("purge", parents=common, help="delete metadata past its retention")
    a.add_argument("--dry-run", action="store_true", help="only show what would be deleted")
    a.set_defaults(handler=_purge)


@contextlib.asynccontextmanager
async def offline_compliance(
    settings: Settings, *, needs_key: bool = True
) -> AsyncIterator[tuple[ComplianceService, str]]:
    """The compliance service over the agent's store, without servers; and the centre's time
    zone. The audit commands read no number, so they need no callee-hash key."""
    from agent.compliance.config import load_compliance

    loaded = load_compliance(settings.config)
    key = offline.hash_key(settings) if needs_key else b""
    async with offline.build(settings, key=key) as build:
        service = build.compliance(loaded)
        await service.start(refresh_seconds=None, follow_attempts=False)
        yield service, loaded.timezone


def _actor(args: argparse.Namespace) -> str:
    from agent.cli.offline import os_actor

    operator = getattr(args, "operator", "")
    return f"{operator} / {os_actor()}" if operator else os_actor()


async def _optout_add(args: argparse.Namespace, settings: Settings) -> int:
    from agent import phone

    async with offline_compliance(settings) as (service, _):
        added = await service.add_optout(args.number, args.purpose, "cli", actor=_actor(args))
    state = "opted out" if added else "already opted out"
    print(f"{phone.mask(args.number)}: {state} of {args.purpose}")
    return 0


async def _optout_remove(args: argparse.Namespace, settings: Settings) -> int:
    from agent import phone

    async with offline_compliance(settings) as (service, _):
        removed = await service.remove_optout(args.number, args.purpose, actor=_actor(args))
    if not removed:
        print(f"{phone.mask(args.number)}: had not opted out of {args.purpose}")
        return 1
    print(f"{phone.mask(args.number)}: opt-out of {args.purpose} removed")
    return 0


async def _optout_list(args: argparse.Namespace, settings: Settings) -> int:
    from agent import phone

    async with offline_compliance(settings) as (service, zone):
        rows = await service.optouts_of(args.number)
    rows = [r for r in rows if not args.purpose or r[0] == args.purpose]
    for purpose, at, source in rows:
        when = datetime.fromtimestamp(at, ZoneInfo(zone)).isoformat(timespec="seconds")
        print(f"{purpose}\t{when}\t{source}")
    if not rows:
        print(f"{phone.mask(args.number)}: no opt-out")
    return 0


async def _explain(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_compliance(settings) as (service, _):
        rows = await service.explain(args.purpose, args.callee)
    widths = [max(len(r[i]) for r in (("RULE", "RESULT", "WHY"), *rows)) for i in range(3)]
    for row in (("RULE", "RESULT", "WHY"), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    stops = [r[0] for r in rows if r[1] == "stops"]
    print(f"-> stopped by: {', '.join(stops)}" if stops else "-> the call may go out now")
    return 0


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from agent.clock import SystemClock

    async with offline_compliance(settings, needs_key=False) as (service, _):
        await service.chain.extend(SystemClock().now())
        report = await service.chain.verify()
    for problem in report.problems:
        print(problem)
    pending = ", ".join(f"{n} {t}" for t, n in report.unchained.items())
    tail = f"; not yet chained: {pending}" if pending else ""
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problems)"
    print(f"audit chain: {report.entries} entries, {report.rows} rows checked{tail}: {verdict}")
    return 0 if report.ok else 1


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from agent.compliance.export import export_rows, write_csv, write_jsonl

    if args.until < args.since:
        raise BadRequest("--to is before --from")
    async with offline_compliance(settings, needs_key=False) as (service, zone):
        tz = ZoneInfo(zone)
        since = datetime.combine(args.since, time(), tz).timestamp()
        until = datetime.combine(args.until + timedelta(days=1), time(), tz).timestamp()
        rows = await export_rows(service.repo, since, until, tz)
    write = write_csv if args.format == "csv" else write_jsonl
    if args.out is None:
        write(rows, sys.stdout)
    else:
        with args.out.open("w", encoding="utf-8", newline="") as fh:
            write(rows, fh)
    return 0


async def _purge(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_compliance(settings, needs_key=False) as (service, zone):
        plans = await service.purge(dry_run=args.dry_run, actor=_actor(args))
    verb = "would delete" if args.dry_run else "deleted"
    for plan in plans:
        cutoff = datetime.fromtimestamp(plan.cutoff, ZoneInfo(zone)).isoformat(timespec="seconds")
        what = "outcomes cleared" if plan.table == "outcomes" else "rows"
        print(f"{plan.table}: {verb} {plan.rows} {what} (older than {plan.days} days, {cutoff})")
    return 0
