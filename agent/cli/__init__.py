"""The ``trustline`` command: argument parsing and the translation of core errors to exit codes.

Each feature module exposes ``register(subparsers)``; every sub-command sets
``handler=async def (args, settings) -> int``. Only this module prints errors to stderr.

Must stay cheap to import: MixMonitor's post-command runs ``trustline recordings seal`` after
every recorded call, and ``--help`` should answer at once. Feature modules therefore import
only argparse at module level; settings, the store, aiohttp, cryptography and phonenumbers are
imported by the handler that needs them (tests/test_cli_startup.py checks this).
"""

from __future__ import annotations

import sys

from agent import errors

# Not ``typing.TYPE_CHECKING``: `trustline recordings seal` runs after every recorded call and
# hands the file to the agent before argparse or typing are imported (see ``main``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

# sysexits.h codes, so shell scripts can tell failures apart. A command with nothing to do
# (removing an entry that is not listed, reinstating a healthy number) exits 0 and says so:
# the state the admin asked for holds.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_IOERR = 74
EX_CONFIG = 78

EXIT_CODES: tuple[tuple[type[errors.TrustlineError], int], ...] = (
    (errors.ConfigError, EX_CONFIG),
    (errors.KeyringError, EX_CONFIG),
    (errors.BadRequest, EX_USAGE),
    (errors.BadData, EX_DATAERR),
    (errors.UnknownNumber, EX_DATAERR),
    (errors.RecordingError, EX_DATAERR),
    (errors.StoreError, EX_IOERR),  # StoreNotFound included
)


def common_options() -> argparse.ArgumentParser:
    """Options every sub-command takes; pass as ``parents=[common_options()]``."""
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        help="data folder: store, callee-hash key (env TRUSTLINE_DATA_DIR; default "
        "/var/lib/trustline if it exists, else $XDG_STATE_HOME/trustline)",
    )
    common.add_argument("--config", help="pools.toml path (env TRUSTLINE_CONFIG)")
    return common


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json`` on a listing command: one JSON object per line instead of a table."""
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")


def build_parser() -> argparse.ArgumentParser:
    # Imported here: the feature modules import common_options from this module.
    from agent.cli import (
        compliance,
        contact,
        db,
        outbound,
        packaging,
        recordings,
        reputation,
        screening,
        stats,
        tokens,
    )
    from agent.cli.parsing import Parser, Version

    parser = Parser(
        prog="trustline",
        description="Trustline agent: caller-ID pools, inbound screening, encrypted recordings.",
        epilog="Exit codes: 0 done (or nothing to do, said on stdout), 64 bad usage, 65 bad data,"
        " 74 store or file failure (74 also when no store is where expected), 78 configuration.",
    )
    parser.add_argument("--version", action=Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # contact after outbound: it adds `numbers import` under outbound's `numbers`.
    features = (outbound, contact, stats, screening, recordings, reputation, compliance, db)
    for feature in (*features, packaging, tokens):
        feature.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["recordings", "seal"]:
        # MixMonitor's post-command, after every recorded call: the running agent seals the
        # file before anything else is imported; None: no agent answered, go the full way.
        from agent.recordings.handoff import seal_by_agent

        handed = seal_by_agent(argv[2:])
        if handed is not None:
            return handed
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from agent.settings import load_settings

        settings = load_settings(
            data_dir=getattr(args, "data_dir", None), config=getattr(args, "config", None)
        )
        code: int = _event_loop(args, settings.event_loop)(args.handler(args, settings))
        return code
    except errors.ConfigError as exc:
        count = f"{len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}"
        print(f"trustline: invalid configuration in {exc.source} ({count}):", file=sys.stderr)
        for problem in exc.problems:  # `file:line: path: message`, the form editors jump to
            print(problem, file=sys.stderr)
        if exc.hint:
            print(exc.hint, file=sys.stderr)
        return EX_CONFIG
    except errors.TrustlineError as exc:
        print(f"trustline: {exc}", file=sys.stderr)
        for kind, code in EXIT_CODES:
            if isinstance(exc, kind):
                return code
        return 1
    except OSError as exc:
        # Disk full, permissions, a path that is not a folder: say which file, not a traceback.
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"trustline: {exc.strerror or exc}{where}", file=sys.stderr)
        return EX_IOERR
    except KeyboardInterrupt:
        return 130


def _event_loop(args: argparse.Namespace, wanted: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop for the agent itself (its FastAGI I/O is then C), asyncio for admin commands."""
    import asyncio

    if getattr(args, "command", None) == "run" and wanted == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without wheels: the standard loop works the same
            return asyncio.run
        return uvloop.run
    return asyncio.run
