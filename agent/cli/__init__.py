"""The ``trustline`` command: argument parsing and the translation of core errors to exit codes.

Each feature module exposes ``register(subparsers)``; every sub-command sets
``handler=async def (args, settings) -> int``. Only this module prints errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from agent import errors
from agent.settings import load_settings

# sysexits.h codes, so shell scripts can tell failures apart.
EXIT_CODES: tuple[tuple[type[errors.TrustlineError], int], ...] = (
    (errors.ConfigError, 78),  # EX_CONFIG
    (errors.KeyringError, 78),
    (errors.BadRequest, 64),  # EX_USAGE
    (errors.UnknownNumber, 65),  # EX_DATAERR
    (errors.RecordingError, 65),
    (errors.StoreError, 74),  # EX_IOERR
)


def common_options() -> argparse.ArgumentParser:
    """Options every sub-command takes; pass as ``parents=[common_options()]``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="data folder (env TRUSTLINE_DATA_DIR)")
    common.add_argument("--config", help="pools.toml path (env TRUSTLINE_CONFIG)")
    return common


def build_parser() -> argparse.ArgumentParser:
    # Imported here: the feature modules import common_options from this module.
    from agent.cli import db, outbound, recordings, screening, stats

    parser = argparse.ArgumentParser(
        prog="trustline",
        description="Trustline agent: caller-ID pools, inbound screening, encrypted recordings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for feature in (outbound, stats, screening, recordings, db):
        feature.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(
            data_dir=getattr(args, "data_dir", None), config=getattr(args, "config", None)
        )
        code: int = asyncio.run(args.handler(args, settings))
        return code
    except errors.ConfigError as exc:
        print(f"trustline: invalid configuration in {exc.source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 78
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
        return 74  # EX_IOERR
    except KeyboardInterrupt:
        return 130
