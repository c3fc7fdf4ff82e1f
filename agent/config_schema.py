"""pools.toml's schema: what each section may hold, checked by pydantic before numbers are
resolved (agent.config does that). Types are strict and every number bounded.

No I/O, no state; the feature sections ([screening], [alerts], [reputation], drift keys,
compliance) come from their own feature packages.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
)

from agent.alerts.config import AlertsConfig
from agent.compliance.config import ComplianceConfig
from agent.contact import cnam
from agent.contact.config import ContactConfig
from agent.outcomes.config import DriftFields, PoolDriftFields, ReputationConfig
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
        problem = _name_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


@lru_cache(maxsize=4096)
def _name_problem(name: str) -> str | None:
    """Why a caller name is refused, or None. A centre writes the same few names on thousands
    of numbers: each distinct name is judged once."""
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "caller name must not contain control characters"
    if not name.strip():
        return "caller name must not be empty"
    return cnam.cnam_problem(name)  # 15 characters of plain ASCII, with a suggestion


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


class PoolHeader(PoolRulesFields):
    """A [pools.NAME] table but its numbers: what is checked again when the numbers of a file
    that loaded whole come from the data dir's copy (agent/config_cache.py)."""

    purposes: list[str] = Field(default_factory=list)
    # One of this pool's numbers, or a number declared in [screening] own_numbers.
    fallback: str | None = None
    reserve: StrictBool = False

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, v: list[str]) -> list[str]:
        for p in v:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", p):
                raise ValueError(f"purpose {p!r}: use letters, digits, '-' or '_' (at most 32)")
        return v


class PoolSection(PoolHeader):
    numbers: list[NumberEntry] = Field(min_length=1)


class ConfigSections(_Strict):
    """The file's sections but its pools, as validated: what a running Config keeps (its pools
    and numbers are resolved, and 100,000 entries are not kept twice)."""

    defaults: DefaultsSection = DefaultsSection()
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    reputation: ReputationConfig = Field(default_factory=ReputationConfig)
    compliance: ComplianceConfig = Field(default_factory=ComplianceConfig)
    contact: ContactConfig = Field(default_factory=ContactConfig)


class ConfigFile(ConfigSections):
    """The file's structure, before numbers are resolved."""

    pools: dict[str, PoolSection] = Field(min_length=1)
