"""The ``trustline`` parser's own behaviour: usage errors exit 64, ``--version`` reads metadata.

Apart from ``agent.cli`` so that importing ``agent.cli`` loads no argparse: MixMonitor's
post-command (``trustline recordings seal``) is answered before any parser is built.
May: subclass argparse. Must not: import settings, the store or any heavy library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from agent.cli import EX_OK, EX_USAGE


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) as documented, not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


class Version(argparse.Action):
    """``--version``: read from the installed package's metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("trustline")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        print(f"trustline {found}")
        parser.exit(EX_OK)
