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

from agent.cli import EX_DATAERR, EX_OK, EX_USAGE, common_options

if TYPE_CHECKING:
    from pathlib import Path

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
