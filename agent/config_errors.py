"""Where a pools.toml problem is, and how it is said: ``pools.toml:40: pools.x.numbers[3].name:
...``, one problem once, at its own line.

Lines come from tomlkit's parser (``Positions`` records where each value and table header
starts), never from searching the text, and only when there is a problem to place.
``validate_section`` validates one section with pydantic, reports its problems in plain words,
and returns what is sound in it, so a mistake in one section does not hide those in the
others. No I/O, no state beyond one parse.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agent.errors import ConfigError

Loc = tuple[int | str, ...]


def path_of(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class Positions:
    """Where each value and table header starts in the text, as the parser saw it."""

    def __init__(self, text: str) -> None:
        from tomlkit.items import Item
        from tomlkit.parser import Parser

        positions = self

        class _Recording(Parser):
            _header_at: int | None = None

            def _parse_value(self) -> Item:
                start = self._idx
                item = super()._parse_value()
                positions.values[id(item)] = (item, start)  # the item is kept: ids stay unique
                return item

            def _parse_table(self, *args: Any, **kwargs: Any) -> Any:
                self._header_at = self._idx
                return super()._parse_table(*args, **kwargs)

            def _parse_key(self) -> Any:
                key = super()._parse_key()
                if self._header_at is not None:
                    positions.headers[tuple(part.key for part in key)] = self._header_at
                    self._header_at = None
                return key

        self.text = text
        self.values: dict[int, tuple[object, int]] = {}
        self.headers: dict[Loc, int] = {}
        self.parser = _Recording(text)
        self.doc: Any = None

    def parse(self) -> dict[str, Any]:
        """The file's data as plain Python; raises tomlkit's TOMLKitError on bad syntax."""
        self.doc = self.parser.parse()
        data: dict[str, Any] = self.doc.unwrap()
        return data

    def syntax_line(self, exc: Exception) -> int:
        """Line of a syntax error: tomlkit's own, or where the parser stopped; for a repeated
        key, the line that sets it again."""
        line = getattr(exc, "line", None)
        if not isinstance(line, int):
            line = self.text.count("\n", 0, max(self.parser._idx - 1, 0)) + 1
        repeated = _REPEATED.match(str(exc))
        if repeated is None:
            return line
        # tomlkit stands past the repeated key (the next line, for some versions): the nearest
        # line at or before there that sets that key.
        sets = re.compile(rf"\s*[\"']?{re.escape(repeated[1])}[\"']?\s*[=.]")
        lines = self.text.split("\n")
        for number in range(min(line, len(lines)), 0, -1):
            if sets.match(lines[number - 1]):
                return number
        return line

    def line(self, loc: Loc) -> int | None:
        """Line of the deepest part of ``loc`` present in the file (a missing key: its table)."""
        best: int | None = None
        node: Any = self.doc
        for depth, part in enumerate(loc, 1):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
            found = self.values.get(id(node))
            start = found[1] if found else self.headers.get(loc[:depth])
            if start is not None:
                best = start
        return None if best is None else self.text.count("\n", 0, best) + 1


class Problems:
    """The problems of one file. Their lines are found only when there is something to say:
    tomlkit's position-keeping parser is about 15 times slower than tomllib (a 100,000-number
    file: tens of seconds), so a sound file is never parsed with it."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.found: dict[tuple[str, str], Loc] = {}

    def add(self, loc: Loc, message: str) -> None:
        # One problem, one line: a bad defaults.timezone shared by four pools is said once.
        self.found.setdefault((path_of(loc), message), loc)

    @property
    def items(self) -> list[str]:
        positions = Positions(self.text)
        positions.parse()  # the text already parsed with tomllib: no syntax error here
        lines = {key: positions.line(loc) for key, loc in self.found.items()}
        ordered = sorted(lines.items(), key=lambda kv: (kv[1] is None, kv[1] or 0))
        return [
            f"{self.source}:{line}: {path}: {msg}" if line else f"{self.source}: {path}: {msg}"
            for (path, msg), line in ordered
        ]


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f'the text "{value}"'
    if isinstance(value, int | float):
        return repr(value)
    return f"a {type(value).__name__}"


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    unquote = " (numbers are written without quotes)" if isinstance(err["input"], str) else ""
    if kind == "int_type":
        return f"expected a whole number, got {_describe(err['input'])}{unquote}"
    if kind == "float_type":
        return f"expected a number, got {_describe(err['input'])}{unquote}"
    if kind == "finite_number":
        return f"expected a finite number, got {err['input']!r}"
    if kind == "bool_type":
        return f"expected true or false (without quotes), got {_describe(err['input'])}"
    if kind == "string_type":
        return f"expected text in quotes, got {_describe(err['input'])}"
    return str(err["msg"]).removeprefix("Value error, ")


M = TypeVar("M", bound=BaseModel)


def validate_section(model: type[M], data: Any, loc: Loc, problems: Problems) -> M | None:
    """Validate one section, report its problems, and return what is sound in it.

    On errors the offending keys (or list entries) are left out and the rest validated again,
    so the cross-checks (numbers, duplicates, fallbacks) still run on the sound part; the
    second pass reports nothing.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    for err in errors:
        problems.add(loc + tuple(err["loc"]), _pydantic_message(err))
    if not isinstance(data, dict):
        return None
    sound: dict[str, Any] = dict(data)
    dropped: dict[str, set[int]] = {}
    for err in errors:
        sub = tuple(err["loc"])
        if not sub or not isinstance(sub[0], str):
            return None
        if len(sub) >= 2 and isinstance(sub[1], int) and isinstance(data.get(sub[0]), list):
            dropped.setdefault(sub[0], set()).add(sub[1])
        else:
            sound.pop(sub[0], None)
    for key, indexes in dropped.items():
        if key in sound:
            sound[key] = [v for i, v in enumerate(data[key]) if i not in indexes]
    try:
        return model.model_validate(sound)
    except ValidationError:
        return None


# A digit, '-' or ':', a digit: every TOML date and time has one (1979-05-27, 07:32). The
# separator is looked for first, a digit before it only then: a few ms on 6 MB of numbers.
_REPEATED = re.compile(r'Key "([^"]*)" already exists')  # tomlkit's words for a repeated key
_DATE_OR_TIME = re.compile(r"[-:](?<=\d[-:])\d")


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The file's data as tomllib reads it; ConfigError at the syntax error's line.

    rtoml (a TOML 1.0 parser in Rust) reads it first: 100,000 numbers take it a tenth of
    tomllib's time, which is most of a first start. A file it refuses, or reads into something
    tomllib would not (a number past 64 bits), goes to tomllib, whose verdict stands; so does
    a file with anything like a date or a time in it (rtoml's time zones are its own class)."""
    import tomllib

    import rtoml

    if not _DATE_OR_TIME.search(text):
        try:
            return rtoml.loads(text)
        except (rtoml.TomlParsingError, ValueError, OverflowError):
            pass  # tomllib says what is wrong, at the line tomlkit finds
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [syntax_problem(text, source, exc)]) from None


def syntax_problem(text: str, source: str, error: Exception) -> str:
    """The syntax error in tomlkit's words and at its line (the ones editors jump to)."""
    from tomlkit.exceptions import TOMLKitError

    positions = Positions(text)
    try:
        positions.parse()
    except TOMLKitError as exc:
        message = str(exc).rsplit(" at line ", 1)[0]
        return f"{source}:{positions.syntax_line(exc)}: TOML syntax: {message}"
    return f"{source}: TOML syntax: {error}"  # a file only tomllib refuses: its own words
