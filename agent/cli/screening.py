"""Sub-commands: ``screen`` (explain a decision without a call), ``block`` and ``allow`` lists.

Translates arguments into ScreeningService calls and prints the results; the service and its
rules decide. ``screen`` is a dry run: it counts nothing and stores nothing, and it cannot see
the live agent's burst/flood windows (shown as "not counted").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agent.cli import add_json_flag, common_options, offline
from agent.errors import ConfigError

if TYPE_CHECKING:
    from agent.screening.service import ScreeningService
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = [common_options()]
    p = sub.add_parser(
        "screen",
        parents=common,
        help="explain how an inbound call would be screened: every rule, weight, the total",
    )
    p.add_argument(
        "--caller", required=True, help="caller number as the trunk sends it ('' = none)"
    )
    p.add_argument("--dialled", required=True, help="our number that was dialled")
    p.add_argument("--attestation", default="", help="A, B, C, a verstat or a verify_result")
    p.add_argument(
        "--verify-result", default="", help="STIR_SHAKEN(0,verify_result), if the PBX verifies"
    )
    p.add_argument("--withheld", action="store_true", help="caller presentation restricted (CLIR)")
    p.set_defaults(handler=_screen)

    for kind in ("block", "allow"):
        # Options go on the actions (``block add X --data-dir D``): argparse would let the
        # action's defaults overwrite values given before it.
        p = sub.add_parser(kind, help=f"manage the {kind} list")
        actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        a = actions.add_parser(
            "add", parents=common, help="add a number (+33612345678) or a prefix (+44*)"
        )
        a.add_argument("entry")
        a.add_argument("--note", default="", help="why (shown by list; no health data)")
        a.set_defaults(handler=_list_add, kind=kind)
        r = actions.add_parser(
            "remove",
            parents=common,
            help="remove a number or prefix (exit 0 with a message if it was not listed)",
        )
        r.add_argument("entry")
        r.set_defaults(handler=_list_remove, kind=kind)
        ls = actions.add_parser(
            "list", parents=common, help="show the entries (works while pools.toml is invalid)"
        )
        add_json_flag(ls)
        ls.set_defaults(handler=_list_show, kind=kind)


@contextlib.asynccontextmanager
async def offline_screening(settings: Settings, command: str) -> AsyncIterator[ScreeningService]:
    """The screening service over the agent's store, without servers: for admin commands."""
    async with offline.build(settings, offline.pools(settings, command)) as build:
        service = build.screening()
        try:
            yield service
        finally:
            await service.close()


async def _screen(args: argparse.Namespace, settings: Settings) -> int:
    from agent.screening.service import InboundCall

    call = InboundCall(
        caller=args.caller,
        dialled=args.dialled,
        attestation=args.attestation,
        verify_result=args.verify_result,
        callingpres=0x20 if args.withheld else 0,
    )
    async with offline_screening(settings, "screen") as service:
        decision = await service.explain(call)
    rows = [
        (r.code, f"{r.weight:+d}", "yes" if r.fired else "no", f"{r.points:+d}", r.detail)
        for r in decision.rules
    ]
    headers = ("RULE", "WEIGHT", "FIRED", "POINTS", "WHY")
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    raw_total = sum(r.points for r in decision.rules)
    clamp = f" (sum {raw_total:+d}, clamped to 0..100)" if raw_total != decision.score else ""
    print(f"TOTAL {decision.score}{clamp} -> {decision.verdict}")
    print(f"TRUSTLINE_REASONS={decision.reasons_text}")
    return 0


async def _list_add(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_screening(settings, f"{args.kind} add") as service:
        entry, added = await service.add_entry(args.kind, args.entry, args.note)
    print(f"{args.kind}: {'added' if added else 'already listed (note updated)'} {entry}")
    return 0


async def _list_remove(args: argparse.Namespace, settings: Settings) -> int:
    async with offline_screening(settings, f"{args.kind} remove") as service:
        entry, removed = await service.remove_entry(args.kind, args.entry)
        static = entry in service.static_entries(args.kind)
    if not removed:
        where = " (it is in pools.toml [screening]; remove it there)" if static else ""
        print(f"{args.kind}: nothing to do, {entry} was not listed{where}")
        return 0
    print(f"{args.kind}: removed {entry}")
    return 0


async def _list_show(args: argparse.Namespace, settings: Settings) -> int:
    from agent.screening.repo import ScreeningRepo

    # The store's entries need no pools.toml: while the file on disk is invalid (the agent
    # runs on its last good one), the list still shows, with a word about the file's entries.
    static: tuple[str, ...] = ()
    try:
        config = offline.pools(settings, f"{args.kind} list")
    except ConfigError as exc:
        print(
            f"trustline: {exc.source} is invalid, its [screening] {args.kind} entries are not "
            "shown (`trustline check-config` lists the problems)",
            file=sys.stderr,
        )
    else:
        static = config.raw.screening.allow if args.kind == "allow" else config.raw.screening.block
    async with offline.admin_store(settings) as db:
        stored = await ScreeningRepo(db).list_entries(args.kind)
    if args.json:
        for entry in static:
            print(json.dumps({"entry": entry, "source": "pools.toml"}))
        for item in stored:
            row = {"entry": item.entry, "source": "store", "added_at": item.added_at}
            print(json.dumps({**row, "note": item.note}))
        return 0
    for entry in static:
        print(f"{entry}\tpools.toml")
    for item in stored:
        when = datetime.fromtimestamp(item.added_at, tz=UTC).strftime("%Y-%m-%d %H:%M")
        print(f"{item.entry}\t{when} UTC\t{item.note}".rstrip())
    if not static and not stored:
        print(f"{args.kind} list is empty")
    return 0
