"""Sub-commands: print-dialplan, print-manager-conf.

A host installed from a wheel has no checkout: these write out the Asterisk files shipped
inside the package (agent/share/, copied there at build time by setup.py), or, in a source
checkout, the repository's own dialplan/ and asterisk-conf/.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import BadRequest, TrustlineError

if TYPE_CHECKING:  # the settings model loads pydantic: not on the --help path
    from agent.settings import Settings


def shared_dir(name: str) -> Path:
    packaged = Path(str(resources.files("agent"))) / "share" / name
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / name  # editable install: the repository
    if checkout.is_dir():
        return checkout
    raise TrustlineError(f"{name}/ is not in this installation (looked in {packaged})")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "print-dialplan",
        help="write out the dialplan files to include from extensions.conf",
        description="Without --out, every file on stdout, each after a '; ---- NAME' line "
        "(one file Asterisk can include whole).",
    )
    p.add_argument("--out", type=Path, help="write each file into this folder instead")
    p.add_argument("--force", action="store_true", help="replace files already in --out")
    p.set_defaults(handler=_print_dialplan)

    p = sub.add_parser(
        "print-manager-conf",
        help="write out the agent's least-privilege AMI user (manager.d/trustline.conf)",
    )
    p.set_defaults(handler=_print_manager_conf)


async def _print_dialplan(args: argparse.Namespace, settings: Settings) -> int:
    files = sorted(shared_dir("dialplan").glob("*.conf"))
    if args.out is None:
        for path in files:
            print(f"; ---- {path.name} (trustline print-dialplan)")
            print(path.read_text(encoding="utf-8"), end="")
        return 0
    clashes = [p.name for p in files if (args.out / p.name).exists()]
    if clashes and not args.force:
        raise BadRequest(f"{', '.join(clashes)} already in {args.out}; --force replaces them")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        (args.out / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"wrote {args.out / path.name}")
    return 0


async def _print_manager_conf(args: argparse.Namespace, settings: Settings) -> int:
    print((shared_dir("asterisk-conf") / "manager.conf").read_text(encoding="utf-8"), end="")
    return 0
