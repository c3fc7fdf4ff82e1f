"""Progress bars for long admin commands (verify, rewrap, purge, imports, copies).

A bar on stderr when stderr is a terminal; nothing at all otherwise, so cron mails, journald
and MixMonitor's post-command logs never fill with carriage returns. Drawing is tqdm's (a
well-kept library that measures rates and handles terminal width); this module only fixes the
house style. Must not print anything else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tqdm import tqdm

T = TypeVar("T")


def _bar(desc: str, total: int | None, unit: str) -> tqdm[object]:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
        leave=True,
        dynamic_ncols=True,
    )


def track(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "file"
) -> Iterator[T]:
    """Iterate ``items`` with a bar: ``for row in track(rows, "verify"): ...``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = _bar(desc, total, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


@contextmanager
def reporter(desc: str, unit: str = "file") -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback for services that report as they go."""
    bar = _bar(desc, None, unit)

    def progress(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield progress
    finally:
        bar.close()
