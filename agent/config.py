"""pools.toml: the PBX admin's file, parsed, validated and resolved into an immutable Config.

Every problem is reported once, as ``pools.toml:40: pools.reminders.numbers[3].name: ...``
(the ``file:line:`` form editors jump to). Lines come from the parser (tomlkit keeps each
value's position), never from searching the text. A section with a schema error does not hide
the problems of the others. Types are strict: ``daily_cap = "80"`` or ``= true`` is an error,
not a cap, and numbers are finite and bounded. Loading never half-succeeds: it returns a whole
new Config or raises ConfigError listing every problem. This module does no other I/O than
reading the file, and holds no live state.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)

from agent import phone
from agent.alerts.config import AlertsConfig
from agent.compliance.config import SECTIONS as COMPLIANCE_SECTIONS
from agent.compliance.config import ComplianceConfig
from agent.errors import ConfigError
from agent.outcomes.config import DriftFields, OnFlag, PoolDriftFields, ReputationConfig
from agent.screening.config import ScreeningConfig

OnExhausted = Literal["fallback", "borrow_reserve", "refuse"]
CNAM_MAX = 15  # caller-name databases keep 15 characters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Bounds: wide enough for any real centre, narrow enough that a typo cannot park a number
# forever (rest_hours = inf) or make a cap meaningless.
MAX_CAP = 100_000
MAX_DAYS = 366


def _count(default: int | None, low: int = 1, high: int = MAX_CAP) -> Any:
    return Field(default, ge=low, le=high)


def _span(default: float | None, high: float) -> Any:
    return Field(default, gt=0, le=high, allow_inf_nan=False)


class NumberEntry(_Strict):
    number: str
    name: str
    daily_cap: StrictInt | None = _count(None)
    active: StrictBool = True

    @field_validator("name")
    @classmethod
    def _cnam(cls, v: str) -> str:
        if any(unicodedata.category(ch).startswith("C") for ch in v):
            raise ValueError("caller name must not contain control characters")
        if not v.strip():
            raise ValueError("caller name must not be empty")
        if len(v) > CNAM_MAX:
            raise ValueError(f"caller name is {len(v)} characters; CNAM allows at most {CNAM_MAX}")
        return v


class PoolRulesFields(PoolDriftFields):
    """Thresholds a pool may override; None means 'take [defaults]'."""

    timezone: str | None = None
    region: str | None = None
    daily_cap: StrictInt | None = _count(None)
    intensive_threshold: StrictInt | None = _count(None)
    intensive_days_before_rest: StrictInt | None = _count(None, high=MAX_DAYS)
    rest_hours: StrictFloat | None = _span(None, 24 * MAX_DAYS)
    reports_to_quarantine: StrictInt | None = _count(None)
    quarantine_days: StrictFloat | None = _span(None, MAX_DAYS)
    on_exhausted: OnExhausted | None = None
    min_active: StrictInt | None = _count(None, low=0)
    warmup_days: StrictInt | None = _count(None, low=0, high=MAX_DAYS)


class DefaultsSection(DriftFields):
    timezone: str = "Europe/Paris"
    region: str = "FR"
    daily_cap: StrictInt = _count(80)
    intensive_threshold: StrictInt = _count(60)
    intensive_days_before_rest: StrictInt = _count(3, high=MAX_DAYS)
    rest_hours: StrictFloat = _span(48, 24 * MAX_DAYS)
    reports_to_quarantine: StrictInt = _count(2)
    quarantine_days: StrictFloat = _span(7, MAX_DAYS)
    on_exhausted: OnExhausted = "fallback"
    min_active: StrictInt = _count(0, low=0)
    # A reserve number promoted into a pool ramps its cap up over this many days.
    warmup_days: StrictInt = _count(3, low=0, high=MAX_DAYS)


class PoolSection(PoolRulesFields):
    purposes: list[str] = Field(default_factory=list)
    # One of this pool's numbers, or a number declared in [screening] own_numbers.
    fallback: str | None = None
    reserve: StrictBool = False
    numbers: list[NumberEntry] = Field(min_length=1)

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", p):
                raise ValueError(f"purpose {p!r}: use letters, digits, '-' or '_' (at most 32)")
        return v


class ConfigFile(_Strict):
    """The file's structure, before numbers are resolved."""

    defaults: DefaultsSection = DefaultsSection()
    pools: dict[str, PoolSection] = Field(min_length=1)
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    reputation: ReputationConfig = Field(default_factory=ReputationConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)


# ---------------------------------------------------------------------------------------------
# The resolved, immutable config the rest of the agent uses.


@dataclass(frozen=True, slots=True)
class PoolRules:
    timezone: ZoneInfo
    region: str
    daily_cap: int
    intensive_threshold: int
    intensive_days_before_rest: int
    rest_hours: float
    reports_to_quarantine: int
    quarantine_days: float
    on_exhausted: OnExhausted
    min_active: int
    warmup_days: int
    drift_window_minutes: float
    drift_min_calls: int
    on_drift: OnFlag
    on_flag: OnFlag


@dataclass(frozen=True, slots=True)
class NumberConfig:
    number: str  # E.164
    name: str
    daily_cap: int
    active: bool
    pool: str


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    purposes: tuple[str, ...]
    reserve: bool
    fallback: str  # E.164
    fallback_name: str
    rules: PoolRules
    numbers: tuple[NumberConfig, ...]


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    pools: MappingProxyType[str, PoolConfig]
    purposes: MappingProxyType[str, str]  # purpose -> pool name
    numbers: MappingProxyType[str, NumberConfig]  # E.164 -> number
    raw: ConfigFile

    @property
    def reserve_pools(self) -> tuple[PoolConfig, ...]:
        return tuple(p for p in self.pools.values() if p.reserve)

    @property
    def default_region(self) -> str:
        return self.raw.defaults.region

    def pool_for(self, purpose: str) -> PoolConfig | None:
        name = self.purposes.get(purpose)
        return self.pools[name] if name is not None else None

    def fallbacks(self) -> dict[str, str]:
        """purpose -> fallback caller ID (E.164), for the dialplan's AstDB copy."""
        return {purpose: self.pools[pool].fallback for purpose, pool in self.purposes.items()}


# ---------------------------------------------------------------------------------------------


Loc = tuple[int | str, ...]


def _path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class _Positions:
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
        """Line of a syntax error: tomlkit's own, or where the parser stopped (a repeated key)."""
        line = getattr(exc, "line", None)
        if isinstance(line, int):
            return line
        # The parser stands past the repeated key, often at the start of the next line.
        return self.text.count("\n", 0, max(self.parser._idx - 1, 0)) + 1

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


class _Problems:
    """The problems of one file. Their lines are found only when there is something to say:
    tomlkit's position-keeping parser is about 15 times slower than tomllib (a 100,000-number
    file: tens of seconds), so a sound file is never parsed with it."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.found: dict[tuple[str, str], Loc] = {}

    def add(self, loc: Loc, message: str) -> None:
        # One problem, one line: a bad defaults.timezone shared by four pools is said once.
        self.found.setdefault((_path(loc), message), loc)

    @property
    def items(self) -> list[str]:
        positions = _Positions(self.text)
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


def _section(model: type[M], data: Any, loc: Loc, problems: _Problems) -> M | None:
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


_TOP_LEVEL = ("defaults", "pools", "screening", "alerts", "reputation", *COMPLIANCE_SECTIONS)


def _syntax_problem(text: str, source: str, error: Exception) -> str:
    """The syntax error in tomlkit's words and at its line (the ones editors jump to)."""
    from tomlkit.exceptions import TOMLKitError

    positions = _Positions(text)
    try:
        positions.parse()
    except TOMLKitError as exc:
        message = str(exc).rsplit(" at line ", 1)[0]
        return f"{source}:{positions.syntax_line(exc)}: TOML syntax: {message}"
    return f"{source}: TOML syntax: {error}"  # a file only tomllib refuses: its own words


def parse_config(text: str, source: str = "pools.toml") -> Config:
    """Parse and validate pools.toml text. Raises ConfigError with every problem found."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [_syntax_problem(text, source, exc)]) from None
    problems = _Problems(source, text)
    for key in data:
        if key not in _TOP_LEVEL:
            problems.add((key,), "unknown key (check the spelling)")
    defaults = _section(DefaultsSection, data.get("defaults", {}), ("defaults",), problems)
    screening = _section(ScreeningConfig, data.get("screening", {}), ("screening",), problems)
    alerts = _section(AlertsConfig, data.get("alerts", {}), ("alerts",), problems)
    reputation = _section(ReputationConfig, data.get("reputation", {}), ("reputation",), problems)
    compliance = _section(
        ComplianceConfig, {k: data[k] for k in COMPLIANCE_SECTIONS if k in data}, (), problems
    )
    sections: dict[str, PoolSection] = {}
    partial: set[str] = set()  # pools with entries left out: their fallback cannot be judged
    raw_pools = data.get("pools")
    if raw_pools is None:
        problems.add((), "no [pools.NAME] table: at least one pool is required")
    elif not isinstance(raw_pools, dict) or not raw_pools:
        problems.add(("pools",), "expected [pools.NAME] tables, at least one")
    else:
        for name, raw in raw_pools.items():
            before = len(problems.found)
            section = _section(PoolSection, raw, ("pools", name), problems)
            if section is not None:
                sections[name] = section
            if len(problems.found) != before:
                partial.add(name)
    config = _resolve(
        defaults or DefaultsSection(),
        sections,
        screening or ScreeningConfig(),
        problems,
        source,
        partial,
        alerts=alerts or AlertsConfig(),
        reputation=reputation or ReputationConfig(),
        compliance=compliance or ComplianceConfig(),
    )
    if problems.found or config is None:
        raise ConfigError(source, problems.items)
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [f"{path}: file is not UTF-8 text"]) from None
    return parse_config(text, str(path))


def _rules(
    defaults: DefaultsSection, pool: PoolSection, where: Loc, problems: _Problems
) -> tuple[PoolRules | None, str | None]:
    """The pool's rules, and the region to read its numbers in (None: unknown region).

    A bad time zone still lets the numbers be checked; each problem is reported where it is
    written (the pool's key, or [defaults] once for every pool that inherits it)."""
    import phonenumbers

    merged = defaults.model_dump()
    for key, value in pool.model_dump(include=set(PoolRulesFields.model_fields)).items():
        if value is not None:
            merged[key] = value
    tz: ZoneInfo | None
    try:
        tz = ZoneInfo(merged["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        loc = (*where, "timezone") if pool.timezone else ("defaults", "timezone")
        problems.add(loc, f"unknown time zone {merged['timezone']!r}")
        tz = None
    region: str | None = str(merged["region"]).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        loc = (*where, "region") if pool.region else ("defaults", "region")
        problems.add(loc, f"unknown region {merged['region']!r} (use an ISO code such as FR, US)")
        region = None
    if tz is None or region is None:
        return None, region
    merged["timezone"] = tz
    merged["region"] = region
    return PoolRules(**merged), region


def _resolve(
    defaults: DefaultsSection,
    sections: dict[str, PoolSection],
    screening: ScreeningConfig,
    problems: _Problems,
    source: str,
    partial: set[str],
    *,
    alerts: AlertsConfig,
    reputation: ReputationConfig,
    compliance: ComplianceConfig,
) -> Config | None:
    pools: dict[str, PoolConfig] = {}
    purposes: dict[str, str] = {}
    numbers: dict[str, NumberConfig] = {}
    seen_at: dict[str, str] = {}
    for pool_name, section in sections.items():
        where: Loc = ("pools", pool_name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", pool_name):
            problems.add(where, "pool names use letters, digits, '-' or '_' (at most 32)")
        rules, region = _rules(defaults, section, where, problems)
        if section.reserve and section.purposes:
            problems.add((*where, "purposes"), "a reserve pool serves no purposes directly")
        pool_numbers: list[NumberConfig] = []
        for i, entry in enumerate(section.numbers):
            nloc: Loc = (*where, "numbers", i, "number")
            if region is None:
                continue
            try:
                e164 = phone.to_e164(entry.number, region)
            except phone.InvalidNumber as exc:
                problems.add(nloc, f"{entry.number!r} is not a valid number ({exc})")
                continue
            if e164 in seen_at:
                problems.add(nloc, f"{e164} is already listed at {seen_at[e164]}")
                continue
            seen_at[e164] = _path(nloc)
            cap = entry.daily_cap or (rules.daily_cap if rules else defaults.daily_cap)
            cfg = NumberConfig(e164, entry.name, cap, entry.active, pool_name)
            pool_numbers.append(cfg)
            numbers[e164] = cfg
        for i, purpose in enumerate(section.purposes):
            if purpose in purposes:
                problems.add(
                    (*where, "purposes", i),
                    f"purpose {purpose!r} is already served by pool {purposes[purpose]!r}",
                )
            purposes[purpose] = pool_name
        if region is None:
            continue
        # An entry left out for a schema error may be the fallback: then it is not judged.
        fallback, fallback_name = _fallback(
            section,
            pool_numbers,
            region,
            where,
            problems,
            screening.own_numbers,
            judge=pool_name not in partial,
        )
        if rules is None:
            continue
        pools[pool_name] = PoolConfig(
            name=pool_name,
            purposes=tuple(section.purposes),
            reserve=section.reserve,
            fallback=fallback,
            fallback_name=fallback_name,
            rules=rules,
            numbers=tuple(pool_numbers),
        )
    if not problems.found and not any(not p.reserve for p in pools.values()):
        problems.add(("pools",), "at least one pool must not be a reserve pool")
    if problems.found:
        return None
    raw = ConfigFile(
        defaults=defaults,
        pools=sections,
        screening=screening,
        alerts=alerts,
        reputation=reputation,
        compliance=compliance,
    )
    return Config(
        source=source,
        pools=MappingProxyType(pools),
        purposes=MappingProxyType(purposes),
        numbers=MappingProxyType(numbers),
        raw=raw,
    )


def _fallback(
    section: PoolSection,
    pool_numbers: list[NumberConfig],
    region: str,
    where: Loc,
    problems: _Problems,
    own_numbers: tuple[str, ...],
    *,
    judge: bool = True,
) -> tuple[str, str]:
    """The caller ID of an exhausted pool: one of its numbers, or a declared own number (a
    switchboard), never a number the centre has not said is its own."""
    default_name = pool_numbers[0].name if pool_numbers else ""
    if section.fallback is None:
        return (pool_numbers[0].number, default_name) if pool_numbers else ("", "")
    loc = (*where, "fallback")
    try:
        e164 = phone.to_e164(section.fallback, region)
    except phone.InvalidNumber as exc:
        problems.add(loc, f"{section.fallback!r} is not a valid number ({exc})")
        return "", ""
    own = next((n for n in pool_numbers if n.number == e164), None)
    if judge and own is None and e164 not in own_numbers:
        problems.add(
            loc,
            f"{e164} is not one of this pool's numbers; to present another number of the "
            "centre (a switchboard), declare it in [screening] own_numbers",
        )
    return e164, own.name if own else default_name
