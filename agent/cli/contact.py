"""Sub-commands of patient contact: ``numbers import``, ``announce``, ``cnam status``,
``cnam set-provisioned``.

May: parse arguments, call agent.contact's services and print. Must not: decide anything
(agent.contact does), or import heavy modules at module level (``--help`` stays instant).
``numbers import`` hangs under the ``numbers`` command agent.cli.outbound registers, so
``trustline numbers`` alone still lists numbers: register this module after that one.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent.cli import EX_DATAERR, EX_OK, EX_USAGE, add_json_flag, common_options, offline

if TYPE_CHECKING:
    from pathlib import Path
    from zoneinfo import ZoneInfo

    from agent.contact.importer import ImportResult
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = [common_options()]
    numbers = sub.choices["numbers"]  # registered by agent.cli.outbound
    actions = numbers.add_subparsers(dest="numbers_action", metavar="ACTION")
    p = actions.add_parser(
        "import",
        parents=common,
        help="add numbers from a CSV (header: number[,name]) to a pool in pools.toml",
        description="Checks each row (valid number, type, ARCEP rules, duplicates), writes the "
        "accepted ones into pools.toml keeping its comments, after a config check. Exit 0 when "
        "every row was accepted (duplicates are skipped), 65 when some were rejected.",
    )
    p.add_argument("file", help="CSV file")
    p.add_argument("--pool", required=True, help="pool to add the numbers to")
    p.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    p.set_defaults(handler=_import)

    p = sub.add_parser(
        "announce",
        parents=common,
        help="pin the caller ID of a coming call to its callee, and queue the pre-call SMS",
        description="Picks the number the call will present now (counted as that call's), pins "
        "it to the callee for pin_hours, and with --sms queues the purpose's SMS "
        "sms_lead_minutes before --at. The running agent sends it and presents the pinned number "
        "(TRUSTLINE_REASON=pinned) when the call comes.",
    )
    p.add_argument("--purpose", required=True)
    p.add_argument("--callee", required=True, help="the patient's number")
    p.add_argument("--case", help="case reference (letters, digits, ._:/-)")
    p.add_argument("--at", help="planned call time today: HH:MM, or YYYY-MM-DDTHH:MM (default now)")
    p.add_argument("--area", help="the patient's postal code or département (for a mobile)")
    p.add_argument("--sms", action="store_true", help="queue the pre-call SMS")
    p.set_defaults(handler=_announce)

    cnam = sub.add_parser("cnam", help="caller names (CNAM): provisioned at the carrier vs wanted")
    cnam_sub = cnam.add_subparsers(dest="cnam_action", required=True, metavar="ACTION")
    p = cnam_sub.add_parser(
        "status",
        parents=common,
        help="numbers whose carrier name differs from pools.toml or is still propagating",
    )
    p.add_argument("--all", action="store_true", help="also list numbers that are in order")
    add_json_flag(p)
    p.set_defaults(handler=_cnam_status)
    p = cnam_sub.add_parser(
        "set-provisioned",
        parents=common,
        help="record the name the carrier was asked to show for a number, and when",
    )
    p.add_argument("number")
    p.add_argument("name")
    p.add_argument(
        "--on", help="date (YYYY-MM-DD, or with a time) in the pools' time zone; default now"
    )
    p.add_argument("--force", action="store_true", help="record it despite the 7-day rule")
    p.set_defaults(handler=_cnam_set)


async def _import(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from agent.cli.progress import track
    from agent.contact.importer import ImportResult, add_numbers, plan, read_rows, write_checked
    from agent.settings import example_config_path

    pools_path = settings.config
    if pools_path.resolve() == example_config_path().resolve():
        print(
            "trustline: name your pools file with --config or TRUSTLINE_CONFIG "
            "(the example shipped with the package is not edited)"
        )
        return EX_USAGE
    rows = read_rows(Path(args.file))
    text = pools_path.read_text(encoding="utf-8")
    verdicts, doc = plan(rows, text, args.pool, str(pools_path))
    result = ImportResult()
    for verdict in track(verdicts, "check", total=len(rows), unit="row"):
        result.verdicts.append(verdict)
    added = result.of("added")
    if added and not args.dry_run:
        write_checked(pools_path, add_numbers(doc, args.pool, added))
        result.written = True
    _summary(result, args, pools_path)
    return EX_DATAERR if result.of("rejected") else EX_OK


def _summary(result: ImportResult, args: argparse.Namespace, pools_path: Path) -> None:
    added, dup, bad = result.of("added"), result.of("duplicate"), result.of("rejected")
    where = f"pool {args.pool} in {pools_path}"
    if args.dry_run:
        print(f"dry run: nothing written; {len(added)} would be added to {where}")
    elif result.written:
        print(f"{len(added)} added to {where}")
    print(f"{'outcome':<10} {'rows':>6}")
    for label, rows in (("added", added), ("duplicate", dup), ("rejected", bad)):
        print(f"{label:<10} {len(rows):>6}")
    for verdict in sorted(dup + bad, key=lambda v: v.line):
        print(f"line {verdict.line}: {verdict.number}: {verdict.outcome}: {verdict.reason}")


def _parse_on(text: str | None, settings: Settings, now: float) -> float:
    from datetime import datetime

    from agent.errors import BadRequest

    if text is None:
        return now
    config = offline.pools(settings, "cnam set-provisioned")
    zone = next(iter(config.pools.values())).rules.timezone
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"--on {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


async def _cnam_set(args: argparse.Namespace, settings: Settings) -> int:
    from agent.clock import SystemClock
    from agent.contact.registry import CnamRegistry

    config = offline.pools(settings, "cnam set-provisioned")
    clock = SystemClock()
    on = _parse_on(args.on, settings, clock.now())
    async with offline.admin_store(settings) as db:
        st = await CnamRegistry(db, clock).set_provisioned(
            config, args.number, args.name, on, force=args.force
        )
    print(
        f"{st.number}: provisioned {st.provisioned!r}; {st.state}"
        + (f" ({st.detail})" if st.detail else "")
    )
    return EX_OK


async def _cnam_status(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from agent.clock import SystemClock
    from agent.contact.registry import CnamRegistry

    config = offline.pools(settings, "cnam status")
    async with offline.admin_store(settings) as db:
        rows = await CnamRegistry(db, SystemClock()).status(config)
    shown = [r for r in rows if args.all or r.state != "ok"]
    if args.json:
        for r in shown:
            print(
                json.dumps(
                    {
                        "number": r.number,
                        "wanted": r.wanted,
                        "provisioned": r.provisioned,
                        "state": r.state,
                        "detail": r.detail,
                    }
                )
            )
        return EX_OK
    print(f"{'number':<16} {'state':<18} {'wanted':<16} {'provisioned':<16} detail")
    for r in shown:
        print(f"{r.number:<16} {r.state:<18} {r.wanted:<16} {r.provisioned or '-':<16} {r.detail}")
    ok = sum(1 for r in rows if r.state == "ok")
    print(f"{ok} of {len(rows)} numbers show their wanted name everywhere")
    return EX_OK


def _planned_time(text: str | None, zone: ZoneInfo) -> float | None:
    from datetime import datetime

    from agent.errors import BadRequest

    if not text:
        return None
    try:
        if len(text) <= 5:
            clock_time = datetime.strptime(text, "%H:%M").time()
            when = datetime.combine(datetime.now(zone).date(), clock_time, zone)
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"--at {text!r}: expected HH:MM or YYYY-MM-DDTHH:MM") from None
    return (when if when.tzinfo else when.replace(tzinfo=zone)).timestamp()


async def _announce(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import datetime

    from agent import phone

    config = offline.pools(settings, "announce")
    pool = config.pool_for(args.purpose)
    zone = (pool or next(iter(config.pools.values()))).rules.timezone
    at = _planned_time(args.at, zone)
    key = offline.hash_key(settings)
    async with offline.build(settings, config, key=key) as build:
        outbound = build.outbound()
        await outbound.start(watch_interval=None)
        try:
            service = build.contact(outbound, build.sms_outbox())
            await service.refresh()
            pinned = await service.announce(
                args.purpose, args.callee, case_ref=args.case, at=at, sms=args.sms, area=args.area
            )
            await service.flush()
        finally:
            await outbound.stop()  # gives back any unit held beyond the one pinned
    print(
        f"{'kept' if pinned.reused else 'pinned'} {pinned.number} ({pinned.name}) for "
        f"{phone.mask(args.callee)} until "
        f"{datetime.fromtimestamp(pinned.expires_at, zone):%Y-%m-%d %H:%M}"
    )
    if pinned.sms_at is not None:
        sms_at = datetime.fromtimestamp(pinned.sms_at, zone)
        print(f"SMS queued for {sms_at:%H:%M} (the running agent sends it)")
    return EX_OK
