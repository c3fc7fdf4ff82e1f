"""Sub-commands: run, check-config, numbers, report-spam, reinstate.

May: parse arguments, validate numbers with agent.phone, call OutboundService and print. Must
not: decide policy (the service does), or import the agent's heavy modules at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli import add_json_flag, common_options, offline

if TYPE_CHECKING:
    from agent.config import Config
    from agent.outbound.service import OutboundService
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
    add_json_flag(p)
    p.set_defaults(handler=_numbers)

    p = sub.add_parser(
        "report-spam", parents=common, help="record a spam report against one of our numbers"
    )
    p.add_argument("number")
    p.add_argument("--source", default="cli")
    p.set_defaults(handler=_report_spam)

    p = sub.add_parser(
        "reinstate",
        parents=common,
        help="end a number's quarantine or rest now (exit 0 with a message if it had neither)",
    )
    p.add_argument("number")
    p.set_defaults(handler=_reinstate)


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from agent.app import run_agent
    from agent.logs import setup_logging

    setup_logging(settings.log_level, fmt=settings.log_format)
    return await run_agent(settings)


async def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    from agent.config import load_config

    path = Path(args.path) if args.path else settings.config
    config = load_config(path)  # ConfigError -> listed on stderr, exit 78
    print(
        f"{path}: OK — {len(config.pools)} pools, {len(config.numbers)} numbers, "
        f"purposes: {', '.join(sorted(config.purposes)) or '-'}"
    )
    return 0


@contextlib.asynccontextmanager
async def offline_service(
    settings: Settings, command: str, *, write: bool = True
) -> AsyncIterator[OutboundService]:
    """The outbound service over the agent's store, without servers: for admin commands."""
    async with offline.build(settings, offline.pools(settings, command)) as build:
        service = build.outbound()
        await service.start(watch_interval=None, write=write)
        try:
            yield service
        finally:
            await service.stop()


async def _numbers(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_service(settings, "numbers", write=False) as service:
        rows = service.number_rows()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
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
    print_table(headers, table)
    return 0


def print_table(headers: tuple[str, ...], table: Sequence[tuple[str, ...]]) -> None:
    widths = [
        max(len(h), *(len(row[i]) for row in table)) if table else len(h)
        for i, h in enumerate(headers)
    ]
    for row in (headers, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _number(text: str, config: Config | None) -> str:
    """The number as E.164, read in the pools' default region; BadData (exit 65) otherwise."""
    from agent import phone
    from agent.errors import BadData

    region = config.default_region if config is not None else "ZZ"
    try:
        return phone.to_e164(text, region, require_valid=False)
    except phone.InvalidNumber as exc:
        hint = "" if config is not None else " (write it as +E164 while pools.toml is invalid)"
        raise BadData(f"{text!r} is not a phone number: {exc}{hint}") from None


async def _report_spam(args: argparse.Namespace, settings: Settings) -> int:
    from agent import phone

    async with offline_service(settings, "report-spam") as service:
        number = _number(args.number, service.config)
        result = await service.report_spam(number, args.source)
        # The state the report left, as `trustline numbers` shows it (a number already
        # quarantined by earlier reports stays quarantined).
        await service.reload_state()
        state = next((r["state"] for r in service.number_rows() if r["number"] == number), None)
    if not result.ours:
        print(f"{phone.mask(number)} is not one of our numbers: report recorded, nothing to do")
        return 0
    print(f"{number}: {result.reports_today} report(s) today, {state or 'unknown state'}")
    return 0


async def _reinstate(args: argparse.Namespace, settings: Settings) -> int:
    from agent.errors import ConfigError

    try:
        config = offline.pools(settings, "reinstate")
    except ConfigError as exc:
        return await _reinstate_from_store(args.number, settings, exc)
    number = _number(args.number, config)
    async with offline_service(settings, "reinstate") as service:
        changed = await service.reinstate(number)
    _say_reinstated(number, changed)
    return 0


def _say_reinstated(number: str, changed: bool) -> None:
    if changed:
        print(f"{number}: reinstated")
    else:
        print(f"{number}: nothing to do, it was neither quarantined nor resting")


async def _reinstate_from_store(number_text: str, settings: Settings, bad: Exception) -> int:
    """pools.toml is invalid (the agent runs on its last good one): a number in the store can
    still be reinstated; only an international number can be read without the pools' region."""
    import sys

    from agent.clock import SystemClock
    from agent.errors import UnknownNumber
    from agent.outbound.repo import OutboundRepo

    number = _number(number_text, None)
    print(f"trustline: pools.toml is invalid ({bad}); reinstating from the store", file=sys.stderr)
    async with offline.admin_store(settings) as db:
        repo = OutboundRepo(db)
        if number not in {row.number for row in await repo.numbers()}:
            raise UnknownNumber(f"{number} is not a number the agent knows")
        changed = await repo.reinstate(number, SystemClock().now())
        await repo.bump_state_version()
    _say_reinstated(number, changed)
    return 0
