"""Sub-commands ``trustline tokens create|list|revoke``: tokens for the HTTP API and dashboard.

``create`` prints the token alone on its last line (scripts take ``| tail -n 1``); it is shown
once and stored only as a hash. May: parse arguments, call TokenService, print. Must not:
print a token anywhere but that last line, or import heavy modules at module level.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from agent.cli import add_json_flag, common_options, offline

if TYPE_CHECKING:
    from agent.admin.audit import Actor
    from agent.settings import Settings

ROLES = ("viewer", "operator", "auditor", "admin")  # agent.tokens.roles.ROLES (not imported: cheap)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tokens = sub.add_parser("tokens", help="API and dashboard tokens: create, list, revoke")
    actions = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    common = [common_options()]
    p = actions.add_parser(
        "create", parents=common, help="create a token (printed once, on the last line)"
    )
    p.add_argument("--name", required=True, help="who holds it, e.g. alice")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--expires-days", type=float, help="expire after N days (default: never)")
    p.set_defaults(handler=_create)
    p = actions.add_parser("list", parents=common, help="tokens: name, role, state (no secrets)")
    add_json_flag(p)
    p.set_defaults(handler=_list)
    p = actions.add_parser("revoke", parents=common, help="revoke the live token of a name")
    p.add_argument("name")
    p.set_defaults(handler=_revoke)


def _actor() -> Actor:
    from agent.admin.audit import Actor
    from agent.cli.offline import os_actor

    return Actor(os_actor(), "cli", "local")


async def _create(args: argparse.Namespace, settings: Settings) -> int:
    actor = _actor()
    async with offline.build(settings, key=b"") as build:
        row, secret = await build.tokens().create(
            args.name, args.role, expires_days=args.expires_days, created_by=actor.name
        )
        await build.audit().record(actor, "token_create", f"token {row.name}", role=row.role)
    expiry = "never expires" if row.expires_at is None else f"expires {_when(row.expires_at)}"
    print(f"token {row.id} for {row.name} ({row.role}), {expiry}; shown once, keep it safe:")
    print(secret)
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with offline.build(settings, key=b"") as build:
        rows = await build.tokens().listing()
        now = build.clock.now()
    for r in rows:
        state = "revoked" if r.revoked_at is not None else ("live" if r.live(now) else "expired")
        if args.json:
            print(
                json.dumps(
                    {
                        "id": r.id,
                        "name": r.name,
                        "role": r.role,
                        "state": state,
                        "created_at": r.created_at,
                        "expires_at": r.expires_at,
                        "last_used_at": r.last_used_at,
                    }
                )
            )
        else:
            expires = "-" if r.expires_at is None else _when(r.expires_at)
            used = "-" if r.last_used_at is None else _when(r.last_used_at)
            print(f"{r.id:>4}  {r.name:<20} {r.role:<9} {state:<8} expires {expires}  used {used}")
    if not rows and not args.json:
        print("no tokens (create one: trustline tokens create --name NAME --role ROLE)")
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    actor = _actor()
    async with offline.build(settings, key=b"") as build:
        revoked = await build.tokens().revoke(args.name)
        if revoked:
            await build.audit().record(actor, "token_revoke", f"token {args.name}")
    print(f"{args.name}: {'revoked' if revoked else 'nothing to do, no live token'}")
    return 0


def _when(ts: float) -> str:
    from agent.clock import utc

    return utc(ts).strftime("%Y-%m-%d %H:%MZ")
