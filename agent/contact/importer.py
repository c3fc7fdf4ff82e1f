"""Number import into pools.toml: read the CSV, check each row, write the accepted numbers.

May: read the CSV and pools.toml, write pools.toml. Writes keep the file's comments and
layout (tomlkit round-trips it), run the full config check on the result first, and replace
the file atomically (a temporary file beside it, fsync, rename): an import that fails the
check, or dies half-way, leaves the file as it was. The running agent picks the change up
like any edit. Must not: decide which numbers are acceptable (agent.contact.numbers does).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.contact.numbers import ImportRow, Verdict, check_rows
from agent.errors import BadData, BadRequest, ConfigError

MAX_ROWS = 1_000_000


@dataclass(slots=True)
class ImportResult:
    verdicts: list[Verdict] = field(default_factory=list)
    written: bool = False

    def of(self, outcome: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.outcome == outcome]


def read_rows(path: Path) -> list[ImportRow]:
    """The CSV's rows: a header with ``number`` and optionally ``name`` (any case/order)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "number" not in header:
                raise BadData(f"{path}: the first line must be a header with a 'number' column")
            at_number = header.index("number")
            at_name = header.index("name") if "name" in header else None
            rows: list[ImportRow] = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(rows) >= MAX_ROWS:
                    raise BadData(f"{path}: more than {MAX_ROWS} rows; split the file")
                line = reader.line_num
                number = cells[at_number] if at_number < len(cells) else ""
                name = cells[at_name] if at_name is not None and at_name < len(cells) else ""
                rows.append(ImportRow(line, number.strip(), name))
    except UnicodeDecodeError:
        raise BadData(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise BadData(f"{path}: not a CSV file ({exc})") from None
    return rows


def plan(
    rows: list[ImportRow], pools_text: str, pool: str, source: str
) -> tuple[Iterator[Verdict], Any]:
    """Verdicts for ``rows`` (lazily) and the parsed pools document they will be added to."""
    import tomlkit

    from agent.config import parse_config

    config = parse_config(pools_text, source)  # the file must be sound before we add to it
    if pool not in config.pools:
        names = ", ".join(sorted(config.pools))
        raise BadRequest(f"no pool {pool!r} in {source} (pools: {names})")
    target = config.pools[pool]
    existing = {n: f"pools.{c.pool}" for n, c in config.numbers.items()}
    for other in config.pools.values():
        existing.setdefault(other.fallback, f"pools.{other.name}.fallback")
    default_name = target.numbers[0].name if target.numbers else None
    doc = tomlkit.parse(pools_text)
    verdicts = check_rows(
        rows, region=target.rules.region, existing=existing, default_name=default_name
    )
    return verdicts, doc


_SENTINEL = "__trustline_import__"


def add_numbers(doc: Any, pool: str, added: Iterable[Verdict]) -> str:
    """pools.toml text with ``added`` appended to the pool's numbers, layout kept.

    tomlkit re-indexes an array on every append (quadratic on 10,000 rows), so one sentinel
    entry is appended where the new ones go, and its text is replaced by theirs."""
    import tomlkit
    from tomlkit.items import AoT

    entries = [(v.e164, v.name) for v in added if v.e164 is not None]
    if not entries:
        return str(tomlkit.dumps(doc))
    numbers = doc["pools"][pool]["numbers"]
    if isinstance(numbers, AoT):  # [[pools.NAME.numbers]] tables
        for e164, name in entries:
            table = tomlkit.table()
            table.update({"number": e164, "name": name})
            numbers.append(table)
        return str(tomlkit.dumps(doc))
    marker = tomlkit.inline_table()
    marker.update({"number": _SENTINEL})
    numbers.append(marker)
    text = str(tomlkit.dumps(doc))
    at = text.index(_SENTINEL)
    opening, closing = text.rindex("{", 0, at), text.index("}", at) + 1
    line_start = text.rfind("\n", 0, opening) + 1
    indent = text[line_start:opening]
    written = [
        f"{{ number = {tomlkit.string(e).as_string()}, name = {tomlkit.string(n).as_string()} }}"
        for e, n in entries
    ]
    if not indent.strip():  # one entry a line: the new ones follow the file's indent
        return text[:opening] + (",\n" + indent).join(written) + text[closing:]
    # A one-line array: the new entries go one a line below it, not on a 10,000-entry line.
    head = text[:opening].rstrip()
    return head + "\n  " + ",\n  ".join(written) + "\n" + text[closing:].lstrip(" ")


def write_checked(path: Path, text: str) -> None:
    """Check ``text`` as pools.toml, then replace ``path`` with it atomically."""
    from agent.config import parse_config

    try:
        parse_config(text, str(path))
    except ConfigError as exc:
        raise ConfigError(
            exc.source, exc.problems, hint=f"nothing was written; {path} is unchanged"
        ) from None
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".import", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
