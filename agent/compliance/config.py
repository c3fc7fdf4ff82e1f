"""The ``[windows]``, ``[limits]`` and ``[retention]`` sections of pools.toml.

```toml
[windows]
default = "Mon-Fri 09:00-19:00"          # purposes without their own window (else unrestricted)
holidays = "FR"                          # public holidays are outside the default window
reminder = "Mon-Fri 09:00-19:00; Sat 09:00-12:00"
survey = { hours = "Mon-Fri 10:00-18:00", holidays = "FR" }

[limits]
survey = { attempts = 3, days = 7 }      # at most 3 calls in any 7 days, per callee

[retention]                              # days each kind of call metadata is kept
call_audit = 365
```

Validation only: a malformed window fails here with the bad token named (``parse_window``).
No live state; the only I/O is ``load_compliance`` reading pools.toml (for commands that need
these sections alone). ``ComplianceConfig.rules_for`` resolves a purpose's rules.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.compliance.policy import Limit, PurposeRules, Window, check_calendar, parse_window
from agent.errors import ConfigError

_PURPOSE = re.compile(r"[A-Za-z0-9_-]{1,32}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_keys(data: dict[str, Any]) -> None:
    for key in data:
        if not _PURPOSE.fullmatch(key):
            raise ValueError(f"purpose {key!r}: use letters, digits, '-' or '_' (at most 32)")


class PurposeWindow(_Strict):
    hours: StrictStr | None = None  # None: any time of day (holidays may still apply)
    holidays: StrictStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _text(cls, data: Any) -> Any:
        return {"hours": data} if isinstance(data, str) else data

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None:
            parse_window(v)
        return v

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, v: str | None) -> str | None:
        return None if v is None else check_calendar(v)

    @cached_property
    def window(self) -> Window | None:
        return parse_window(self.hours) if self.hours else None


class WindowsSection(RootModel[dict[str, PurposeWindow]]):
    """purpose -> window; ``default`` for the others; top-level ``holidays`` goes with it."""

    model_config = ConfigDict(frozen=True)
    root: dict[str, PurposeWindow] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_holidays(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "holidays" not in data:
            return data
        data = dict(data)
        calendar = data.pop("holidays")
        default = data.get("default")
        if isinstance(default, dict):
            data["default"] = {"holidays": calendar, **default}
        else:
            data["default"] = {"hours": default, "holidays": calendar}
        return data

    @field_validator("root")
    @classmethod
    def _keys(cls, v: dict[str, PurposeWindow]) -> dict[str, PurposeWindow]:
        _check_keys(v)
        return v


class LimitSpec(_Strict):
    attempts: StrictInt = Field(gt=0)
    days: StrictInt = Field(gt=0)


class LimitsSection(RootModel[dict[str, LimitSpec]]):
    """purpose -> attempts per callee per rolling period; ``default`` for the others."""

    model_config = ConfigDict(frozen=True)
    root: dict[str, LimitSpec] = Field(default_factory=dict)

    @field_validator("root")
    @classmethod
    def _keys(cls, v: dict[str, LimitSpec]) -> dict[str, LimitSpec]:
        _check_keys(v)
        return v


class RetentionSection(_Strict):
    """Days each kind of call metadata is kept before the agent deletes it.

    Defaults keep a year of calls (what an audit of last year asks for), and three years of
    opt-out events (the proof a wish was honoured). Admin and recording audits are not purged.
    """

    call_audit: StrictInt = Field(365, gt=0)
    outcomes: StrictInt = Field(365, gt=0)  # outcome columns of call_audit, cleared earlier
    screening_decisions: StrictInt = Field(90, gt=0)
    spam_reports: StrictInt = Field(365, gt=0)
    optout_events: StrictInt = Field(1095, gt=0)


class ComplianceConfig(_Strict):
    windows: WindowsSection = Field(default_factory=WindowsSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)

    def rules_for(self, purpose: str) -> PurposeRules:
        """A purpose's window (its own, else the default, else none) and limit."""
        windows = self.windows.root
        spec = windows.get(purpose) or windows.get("default")
        limit = self.limits.root.get(purpose) or self.limits.root.get("default")
        return PurposeRules(
            window=spec.window if spec else None,
            calendar=spec.holidays if spec else None,
            limit=Limit(limit.attempts, limit.days) if limit else None,
        )


def needle(data: Any, loc: tuple[int | str, ...]) -> str:
    """What to look for in pools.toml to find the line of a problem in these sections: the
    offending window or calendar text, else the purpose key."""
    key = str(loc[1]) if len(loc) > 1 else str(loc[0])
    section = data.get(loc[0]) if isinstance(data, dict) else None
    if loc[0] != "windows" or not isinstance(section, dict):
        return key
    if loc[-1] == "holidays" and isinstance(section.get("holidays"), str):
        return str(section["holidays"])
    value = section.get(key)
    if isinstance(value, dict):
        value = value.get(str(loc[-1]))
    return value if isinstance(value, str) else key


SECTIONS = ("windows", "limits", "retention")


@dataclass(frozen=True, slots=True)
class Loaded:
    compliance: ComplianceConfig
    region: str  # [defaults] region: how national numbers are read
    timezone: str  # [defaults] timezone: for numbers phonenumbers cannot place, and exports


def _line(text: str, section: str, needle_text: str) -> int | None:
    """The line of ``needle_text`` (a quoted value or a key) after the ``[section]`` header."""
    start = max(text.find(f"[{section}]"), 0)
    for pattern in (f'"{needle_text}"', f"{needle_text} =", f"{needle_text}="):
        idx = text.find(pattern, start)
        if idx >= 0:
            return text.count("\n", 0, idx) + 1
    return None


def problem(text: str, data: Any, err: Any) -> str:
    """One pydantic error in these sections as ``line N: path: message`` (for check-config)."""
    loc = tuple(err["loc"])
    line = _line(text, str(loc[0]), needle(data, loc))
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key (check the spelling)"
    path = ".".join(str(p) for p in loc)
    return f"line {line}: {path}: {message}" if line else f"{path}: {message}"


def from_sections(raw: Any) -> ComplianceConfig:
    """The compliance part of a parsed pools.toml (agent.config.ConfigFile) once it carries
    it (a ``compliance`` field, or these sections as fields); defaults before."""
    found = getattr(raw, "compliance", None)
    if isinstance(found, ComplianceConfig):
        return found
    return ComplianceConfig(
        windows=getattr(raw, "windows", WindowsSection()),
        limits=getattr(raw, "limits", LimitsSection()),
        retention=getattr(raw, "retention", RetentionSection()),
    )


def parse_compliance(text: str, source: str = "pools.toml") -> Loaded:
    """These sections of pools.toml text, each problem with its line and key path."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"TOML syntax: {exc}"]) from None
    try:
        compliance = ComplianceConfig.model_validate({k: data[k] for k in SECTIONS if k in data})
    except ValidationError as exc:
        raise ConfigError(source, [problem(text, data, err) for err in exc.errors()]) from None
    defaults = data.get("defaults", {})
    return Loaded(
        compliance,
        str(defaults.get("region", "FR")).upper(),
        str(defaults.get("timezone", "Europe/Paris")),
    )


def load_compliance(path: Path) -> Loaded:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read: {exc}"]) from None
    return parse_compliance(text, str(path))
