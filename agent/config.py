"""pools.toml: the PBX admin's file, parsed, validated and resolved into an immutable Config.

Every problem is reported with its location: the TOML line where one is known, and the key
path (``pools.reminders.numbers[3].number``). Loading never half-succeeds: it returns a whole
new Config or raises ConfigError listing every problem. This module does no other I/O than
reading the file, and holds no live state.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent import phone
from agent.errors import ConfigError
from agent.screening.config import ScreeningConfig

OnExhausted = Literal["fallback", "borrow_reserve", "refuse"]
CNAM_MAX = 15  # caller-name databases keep 15 characters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberEntry(_Strict):
    number: str
    name: str
    daily_cap: int | None = Field(None, gt=0)
    active: bool = True

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


class PoolRulesFields(_Strict):
    """Thresholds a pool may override; None means 'take [defaults]'."""

    timezone: str | None = None
    region: str | None = None
    daily_cap: int | None = Field(None, gt=0)
    intensive_threshold: int | None = Field(None, gt=0)
    intensive_days_before_rest: int | None = Field(None, gt=0)
    rest_hours: float | None = Field(None, gt=0)
    reports_to_quarantine: int | None = Field(None, gt=0)
    quarantine_days: float | None = Field(None, gt=0)
    on_exhausted: OnExhausted | None = None
    min_active: int | None = Field(None, ge=0)
    warmup_days: int | None = Field(None, ge=0)


class DefaultsSection(_Strict):
    timezone: str = "Europe/Paris"
    region: str = "FR"
    daily_cap: int = Field(80, gt=0)
    intensive_threshold: int = Field(60, gt=0)
    intensive_days_before_rest: int = Field(3, gt=0)
    rest_hours: float = Field(48, gt=0)
    reports_to_quarantine: int = Field(2, gt=0)
    quarantine_days: float = Field(7, gt=0)
    on_exhausted: OnExhausted = "fallback"
    min_active: int = Field(0, ge=0)
    # A reserve number promoted into a pool ramps its cap up over this many days.
    warmup_days: int = Field(3, ge=0)


class PoolSection(PoolRulesFields):
    purposes: list[str] = []
    fallback: str | None = None
    reserve: bool = False
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


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _line_of(text: str, needle: str, nth: int = 1) -> int | None:
    """Best-effort line of the nth occurrence of a value or key in the TOML text."""
    if not needle:
        return None
    for pattern in (f'"{needle}"', f"'{needle}'", f"[{needle}]", f"{needle} =", f"{needle}="):
        idx = -1
        for _ in range(nth):
            idx = text.find(pattern, idx + 1)
            if idx < 0:
                break
        if idx >= 0:
            return text.count("\n", 0, idx) + 1
    return None


def _needle(data: Any, loc: tuple[int | str, ...], err_type: str) -> str:
    """What to look for in the text to find the line of the problem at ``loc``."""
    if err_type == "extra_forbidden" and loc:
        # An unknown key inside a numbers entry: find the entry by its number.
        entry = _entry(data, loc)
        return str(entry.get("number", loc[-1])) if entry else str(loc[-1])
    entry = _entry(data, loc)
    if entry is not None and "number" in entry:
        return str(entry["number"])
    if len(loc) >= 3 and loc[0] == "pools":
        return f"{loc[2]}"
    if len(loc) >= 2 and loc[0] in ("pools", "defaults"):
        return f"pools.{loc[1]}" if loc[0] == "pools" else str(loc[1])
    return str(loc[0]) if loc else ""


def _entry(data: Any, loc: tuple[int | str, ...]) -> dict[str, Any] | None:
    if len(loc) >= 4 and loc[0] == "pools" and loc[2] == "numbers" and isinstance(loc[3], int):
        try:
            entry = data["pools"][loc[1]]["numbers"][loc[3]]
        except (KeyError, IndexError, TypeError):
            return None
        return entry if isinstance(entry, dict) else None
    return None


class _Problems:
    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.items: list[str] = []

    def add(self, path: str, message: str, needle: str = "", nth: int = 1) -> None:
        line = _line_of(self.text, needle, nth)
        where = f"line {line}: " if line else ""
        self.items.append(f"{where}{path}: {message}")


def _pydantic_message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    if kind == "missing":
        return "required key is missing"
    return str(err["msg"]).removeprefix("Value error, ")


def parse_config(text: str, source: str = "pools.toml") -> Config:
    """Parse and validate pools.toml text. Raises ConfigError with every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax: {exc}"]) from None
    problems = _Problems(source, text)
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            problems.add(_path(loc), _pydantic_message(err), _needle(data, loc, err["type"]))
        raise ConfigError(source, problems.items) from None
    config = _resolve(parsed, problems, source)
    if problems.items:
        raise ConfigError(source, problems.items)
    assert config is not None
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["file is not UTF-8 text"]) from None
    return parse_config(text, str(path))


def _rules(
    defaults: DefaultsSection, pool: PoolSection, where: str, problems: _Problems
) -> PoolRules | None:
    merged = defaults.model_dump()
    for key, value in pool.model_dump(include=set(PoolRulesFields.model_fields)).items():
        if value is not None:
            merged[key] = value
    try:
        tz = ZoneInfo(merged["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        src = "timezone" if pool.timezone else "defaults.timezone"
        path = f"{where}.timezone" if pool.timezone else src
        problems.add(path, f"unknown time zone {merged['timezone']!r}", merged["timezone"])
        return None
    region = str(merged["region"]).upper()
    import phonenumbers

    if region not in phonenumbers.SUPPORTED_REGIONS:
        path = f"{where}.region" if pool.region else "defaults.region"
        problems.add(
            path,
            f"unknown region {merged['region']!r} (use an ISO code such as FR, US)",
            merged["region"],
        )
        return None
    merged["timezone"] = tz
    merged["region"] = region
    return PoolRules(**merged)


def _resolve(parsed: ConfigFile, problems: _Problems, source: str) -> Config | None:
    pools: dict[str, PoolConfig] = {}
    purposes: dict[str, str] = {}
    numbers: dict[str, NumberConfig] = {}
    seen_at: dict[str, str] = {}
    for pool_name, section in parsed.pools.items():
        where = f"pools.{pool_name}"
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", pool_name):
            problems.add(where, "pool names use letters, digits, '-' or '_' (at most 32)", where)
        rules = _rules(parsed.defaults, section, where, problems)
        if rules is None:
            continue
        if section.reserve and section.purposes:
            problems.add(f"{where}.purposes", "a reserve pool serves no purposes directly", where)
        pool_numbers: list[NumberConfig] = []
        for i, entry in enumerate(section.numbers):
            npath = f"{where}.numbers[{i}].number"
            try:
                e164 = phone.to_e164(entry.number, rules.region)
            except phone.InvalidNumber as exc:
                problems.add(npath, f"{entry.number!r} is not a valid number ({exc})", entry.number)
                continue
            if e164 in seen_at:
                problems.add(
                    npath, f"{e164} is already listed at {seen_at[e164]}", entry.number, nth=2
                )
                continue
            seen_at[e164] = npath
            cfg = NumberConfig(
                e164, entry.name, entry.daily_cap or rules.daily_cap, entry.active, pool_name
            )
            pool_numbers.append(cfg)
            numbers[e164] = cfg
        for purpose in section.purposes:
            if purpose in purposes:
                problems.add(
                    f"{where}.purposes",
                    f"purpose {purpose!r} is already served by pool {purposes[purpose]!r}",
                    purpose,
                )
            purposes[purpose] = pool_name
        fallback, fallback_name = _fallback(section, pool_numbers, rules, where, problems, numbers)
        pools[pool_name] = PoolConfig(
            name=pool_name,
            purposes=tuple(section.purposes),
            reserve=section.reserve,
            fallback=fallback,
            fallback_name=fallback_name,
            rules=rules,
            numbers=tuple(pool_numbers),
        )
    if not problems.items and not any(not p.reserve for p in pools.values()):
        problems.add("pools", "at least one pool must not be a reserve pool")
    if problems.items:
        return None
    return Config(
        source=source,
        pools=MappingProxyType(pools),
        purposes=MappingProxyType(purposes),
        numbers=MappingProxyType(numbers),
        raw=parsed,
    )


def _fallback(
    section: PoolSection,
    pool_numbers: list[NumberConfig],
    rules: PoolRules,
    where: str,
    problems: _Problems,
    numbers: dict[str, NumberConfig],
) -> tuple[str, str]:
    default_name = pool_numbers[0].name if pool_numbers else ""
    if section.fallback is None:
        return (pool_numbers[0].number, default_name) if pool_numbers else ("", "")
    try:
        e164 = phone.to_e164(section.fallback, rules.region)
    except phone.InvalidNumber as exc:
        problems.add(
            f"{where}.fallback",
            f"{section.fallback!r} is not a valid number ({exc})",
            section.fallback,
        )
        return "", ""
    own = numbers.get(e164)
    return e164, own.name if own else default_name
