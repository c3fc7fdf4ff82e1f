"""pools.toml: the PBX admin's file, parsed, validated and resolved into an immutable Config.

Every problem is reported once, as ``pools.toml:40: pools.reminders.numbers[3].name: ...``
(the ``file:line:`` form editors jump to). Lines come from the parser (tomlkit keeps each
value's position), never from searching the text. A section with a schema error does not hide
the problems of the others. Types are strict: ``daily_cap = "80"`` or ``= true`` is an error,
not a cap, and numbers are finite and bounded. Loading never half-succeeds: it returns a whole
new Config or raises ConfigError listing every problem. This module does no other I/O than
reading the file (and, given the data dir, agent/config_cache.py's copy of what a sound file was
read as), and holds no live state. The file's schema is in agent/config_schema.py,
where problems are and how they are said in agent/config_errors.py; this module resolves the
sound sections into a Config (numbers in E.164, one owner pool per purpose, fallbacks).
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent import config_cache
from agent.alerts.config import AlertsConfig
from agent.compliance.config import SECTIONS as COMPLIANCE_SECTIONS
from agent.compliance.config import ComplianceConfig
from agent.config_errors import (
    Loc,
    Problems,
    parse_toml,
    validate_section,
)
from agent.config_numbers import NumberConfig, NumberTable, PoolColumns, PoolNumbers, read_pool
from agent.config_numbers import fallback_of as _fallback
from agent.config_schema import (
    CNAM_MAX,
    ConfigFile,
    ConfigSections,
    DefaultsSection,
    NumberEntry,
    OnExhausted,
    PoolHeader,
    PoolRulesFields,
    PoolSection,
)
from agent.contact.config import ContactConfig
from agent.contact.config import problems as contact_problems
from agent.errors import ConfigError
from agent.outcomes.config import OnFlag, ReputationConfig
from agent.screening.config import ScreeningConfig

# The schema's names stay importable from here (agent.config is the module callers know).
__all__ = [
    "CNAM_MAX",
    "Config",
    "ConfigFile",
    "ConfigSections",
    "DefaultsSection",
    "NumberConfig",
    "NumberEntry",
    "NumberTable",
    "PoolConfig",
    "PoolRules",
    "PoolSection",
    "load_config",
    "parse_config",
]

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
class PoolConfig:
    name: str
    purposes: tuple[str, ...]
    reserve: bool
    fallback: str  # E.164
    fallback_name: str
    rules: PoolRules
    numbers: PoolNumbers  # a slice of Config.numbers


@dataclass(frozen=True, slots=True)
class Config:
    source: str
    pools: MappingProxyType[str, PoolConfig]
    purposes: MappingProxyType[str, str]  # purpose -> pool name
    numbers: NumberTable  # E.164 -> number, in columns (agent/config_numbers.py)
    raw: ConfigSections  # the other sections as written; pools are in ``pools``

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


_TOP_LEVEL = (
    "defaults",
    "pools",
    "screening",
    "alerts",
    "reputation",
    "contact",
    *COMPLIANCE_SECTIONS,
)


def parse_config(text: str, source: str = "pools.toml", cache_dir: Path | None = None) -> Config:
    """Parse and validate pools.toml text. Raises ConfigError with every problem found.
    With ``cache_dir`` (the data dir), a file that loaded whole before is not parsed nor its
    numbers read again (agent/config_cache.py); every other section is checked all the same."""
    kept_as = config_cache.key_of(text) if cache_dir is not None else ""
    kept = config_cache.load(cache_dir, kept_as) if cache_dir is not None else None
    data = kept.data if kept is not None else parse_toml(text, source)
    problems = Problems(source, text)
    for key in data:
        if key not in _TOP_LEVEL:
            problems.add((key,), "unknown key (check the spelling)")
    defaults = validate_section(DefaultsSection, data.get("defaults", {}), ("defaults",), problems)
    screening = validate_section(
        ScreeningConfig, data.get("screening", {}), ("screening",), problems
    )
    alerts = validate_section(AlertsConfig, data.get("alerts", {}), ("alerts",), problems)
    reputation = validate_section(
        ReputationConfig, data.get("reputation", {}), ("reputation",), problems
    )
    compliance = validate_section(
        ComplianceConfig, {k: data[k] for k in COMPLIANCE_SECTIONS if k in data}, (), problems
    )
    contact = validate_section(ContactConfig, data.get("contact", {}), ("contact",), problems)
    # A kept file's numbers were read already: its pools are checked but for them.
    sections, partial = _pool_sections(data, PoolHeader if kept else PoolSection, problems)
    read: dict[str, PoolColumns] = {}  # each pool's numbers, as _resolve read or took them
    config = _resolve(
        defaults or DefaultsSection(),
        sections,
        screening or ScreeningConfig(),
        problems,
        source,
        partial,
        ConfigExtras(
            alerts=alerts or AlertsConfig(),
            reputation=reputation or ReputationConfig(),
            compliance=compliance or ComplianceConfig(),
            contact=contact or ContactConfig(),
        ),
        kept.numbers if kept is not None else None,
        read,
    )
    if problems.found or config is None:
        raise ConfigError(source, problems.items)
    if cache_dir is not None and kept is None:
        config_cache.store(cache_dir, kept_as, data, read)
    return config


def _pool_sections(
    data: dict[str, object], model: type[PoolHeader], problems: Problems
) -> tuple[dict[str, PoolHeader], set[str]]:
    """The sound [pools.NAME] tables, and the pools with entries left out for a problem (their
    fallback cannot be judged)."""
    sections: dict[str, PoolHeader] = {}
    partial: set[str] = set()
    raw_pools = data.get("pools")
    if raw_pools is None:
        problems.add((), "no [pools.NAME] table: at least one pool is required")
    elif not isinstance(raw_pools, dict) or not raw_pools:
        problems.add(("pools",), "expected [pools.NAME] tables, at least one")
    else:
        for name, raw in raw_pools.items():
            before = len(problems.found)
            section = validate_section(model, raw, ("pools", name), problems)
            if section is not None:
                sections[name] = section
            if len(problems.found) != before:
                partial.add(name)
    return sections, partial


def load_config(path: Path, cache_dir: Path | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), [f"{path}: file is not UTF-8 text"]) from None
    gc_was_on = gc.isenabled()
    gc.disable()  # 100,000s of new objects, no cyclic garbage: walking them is a third of a load
    try:
        return parse_config(text, str(path), cache_dir)
    finally:
        if gc_was_on:
            gc.enable()


def _rules(
    defaults: DefaultsSection, pool: PoolHeader, where: Loc, problems: Problems
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
    sections: dict[str, PoolHeader],
    screening: ScreeningConfig,
    problems: Problems,
    source: str,
    partial: set[str],
    extras: ConfigExtras,
    kept: dict[str, PoolColumns] | None,
    read: dict[str, PoolColumns],
) -> Config | None:
    """The Config of the sound sections, or None when there are problems. Each pool's numbers
    are read from its entries, or taken as ``kept`` (a file that loaded whole before), and
    left in ``read``."""
    resolved: dict[str, tuple[PoolHeader, PoolRules, str, str]] = {}
    purposes: dict[str, str] = {}
    seen_at: dict[str, Loc] = {}
    names: dict[str, str] = {}  # one string per distinct caller name, however many numbers
    for pool_name, section in sections.items():
        where: Loc = ("pools", pool_name)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", pool_name):
            problems.add(where, "pool names use letters, digits, '-' or '_' (at most 32)")
        rules, region = _rules(defaults, section, where, problems)
        if section.reserve and section.purposes:
            problems.add((*where, "purposes"), "a reserve pool serves no purposes directly")
        cap = rules.daily_cap if rules else defaults.daily_cap
        columns = read[pool_name] = (
            kept[pool_name]
            if kept is not None
            else read_pool(section, pool_name, region, cap, seen_at, names, problems)
        )
        _claim_purposes(section, pool_name, purposes, problems)
        if region is None:
            continue
        # An entry left out for a schema error may be the fallback: then it is not judged.
        judge = pool_name not in partial
        fallback, fallback_name = _fallback(
            section, columns, region, where, problems, screening.own_numbers, judge=judge
        )
        if rules is not None:
            resolved[pool_name] = (section, rules, fallback, fallback_name)
    # [contact] names pools and purposes: checked against the ones the file declares.
    for loc, message in contact_problems(extras["contact"], sections, purposes, defaults.region):
        problems.add(("contact", *loc), message)
    if not problems.found and not any(not s.reserve for s, *_ in resolved.values()):
        problems.add(("pools",), "at least one pool must not be a reserve pool")
    if problems.found:
        return None
    return _config(
        source,
        resolved,
        purposes,
        read,
        ConfigSections(defaults=defaults, screening=screening, **extras),
    )


def _config(
    source: str,
    resolved: dict[str, tuple[PoolHeader, PoolRules, str, str]],
    purposes: dict[str, str],
    read: dict[str, PoolColumns],
    raw: ConfigSections,
) -> Config:
    table = NumberTable(read)
    pools = {
        name: PoolConfig(
            name=name,
            purposes=tuple(section.purposes),
            reserve=section.reserve,
            fallback=fallback,
            fallback_name=fallback_name,
            rules=rules,
            numbers=table.pool(name),
        )
        for name, (section, rules, fallback, fallback_name) in resolved.items()
    }
    frozen = MappingProxyType
    return Config(source, frozen(pools), frozen(purposes), table, raw)


class ConfigExtras(TypedDict):
    """The sections other features own, validated on their own and kept whole in ``raw``."""

    alerts: AlertsConfig
    reputation: ReputationConfig
    compliance: ComplianceConfig
    contact: ContactConfig


def _claim_purposes(
    section: PoolHeader, pool_name: str, purposes: dict[str, str], problems: Problems
) -> None:
    """Record which pool serves each of this pool's purposes (purpose -> pool); a purpose
    served twice is a problem."""
    for i, purpose in enumerate(section.purposes):
        if purpose in purposes:
            problems.add(
                ("pools", pool_name, "purposes", i),
                f"purpose {purpose!r} is already served by pool {purposes[purpose]!r}",
            )
        purposes[purpose] = pool_name
