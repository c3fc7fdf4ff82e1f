"""Sub-commands: run, check-config, numbers, report-spam, reinstate."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from agent import phone
from agent.app import load_hash_key, open_store, run_agent
from agent.clock import SystemClock
from agent.config import load_config
from agent.logs import setup_logging
from agent.services.outbound import OutboundService
from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from agent.cli import common_options

    common = [common_options()]
    p = sub.add_parser("run", parents=common, help="run the agent (FastAGI, HTTP, AMI, recordings)")
    p.set_defaults(handler=_run)

    p = sub.add_parser(
        "check-config", parents=common, help="validate a pools.toml and list every problem"
    )
    p.add_argument("path", nargs="?", help="file to check (default: the configured one)")
    p.set_defaults(handler=_check_config)

    p = sub.add_parser(
        "numbers", parents=common, help="table of numbers: pool, used today / cap, state"
    )
    p.set_defaults(handler=_numbers)

    p = sub.add_parser(
        "report-spam", parents=common, help="record a spam report against one of our numbers"
    )
    p.add_argument("number")
    p.add_argument("--source", default="cli")
    p.set_defaults(handler=_report_spam)

    p = sub.add_parser("reinstate", parents=common, help="end a number's quarantine or rest now")
    p.add_argument("number")
    p.set_defaults(handler=_reinstate)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    setup_logging(settings.log_level, fmt=settings.log_format)
    return await run_agent(settings)


async def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    path = Path(args.path) if args.path else settings.config
    config = load_config(path)  # ConfigError -> listed on stderr, exit 78
    print(
        f"{path}: OK — {len(config.pools)} pools, {len(config.numbers)} numbers, "
        f"purposes: {', '.join(sorted(config.purposes)) or '-'}"
    )
    return 0


@contextlib.asynccontextmanager
async def offline_service(
    settings: Settings, *, write: bool = True
) -> AsyncIterator[OutboundService]:
    """The outbound service over the store, without servers: for admin commands."""
    config = load_config(settings.config)
    db = await open_store(settings)
    try:
        service = OutboundService(db, SystemClock(), config, load_hash_key(settings.hash_key_path))
        await service.start(watch_interval=None, write=write)
        try:
            yield service
        finally:
            await service.stop()
    finally:
        await db.close()


async def _numbers(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_service(settings, write=False) as service:
        rows = service.number_rows()
    headers = ("POOL", "NUMBER", "NAME", "TODAY", "STATE")
    table = [
        (
            str(r["pool"]),
            str(r["number"]),
            str(r["name"]),
            f"{r['used']}/{r['cap']}",
            str(r["state"]),
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(row[i]) for row in table)) if table else len(h)
        for i, h in enumerate(headers)
    ]
    for row in (headers, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _report_spam(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_service(settings) as service:
        result = await service.report_spam(args.number, args.source)
    if not result.ours:
        print(
            f"{phone.mask(result.number)} is not one of our numbers: report recorded, nothing to do"
        )
        return 0
    state = "quarantined" if result.quarantined else "still in its pool"
    print(f"{result.number}: {result.reports_today} report(s) today, {state}")
    return 0


async def _reinstate(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_service(settings) as service:
        changed = await service.reinstate(args.number)
    print(f"{args.number}: {'reinstated' if changed else 'was neither quarantined nor resting'}")
    return 0 if changed else 1
