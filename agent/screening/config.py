"""The ``[screening]`` section of pools.toml: weights, thresholds, windows, lists.

Validated with the rest of the file (agent.config) and swapped whole on reload. Reason codes
are the names of the weights, so what the admin tunes is what the call log shows. This module
does no I/O and holds no live state.
"""

from __future__ import annotations

from typing import Self

import phonenumbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from agent.screening.lists import normalise_entry


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _w(default: int) -> StrictInt:
    # Negative weights vouch for a caller (callback); the total is clamped to 0..100.
    return Field(default, ge=-100, le=100)


class ScreeningWeights(_Strict):
    """Points each rule adds when it fires. A weight of 0 keeps the reason visible but inert."""

    blocklist: StrictInt = _w(100)
    withheld: StrictInt = _w(40)
    invalid_number: StrictInt = _w(60)
    own_number: StrictInt = _w(85)  # our own caller ID presented from outside: spoofing
    premium_rate: StrictInt = _w(60)
    toll_free: StrictInt = _w(10)
    international: StrictInt = _w(10)
    # STIR/SHAKEN is a signal, never an allow: "A" adds nothing, it does not subtract.
    stir_a: StrictInt = _w(0)
    stir_b: StrictInt = _w(5)
    stir_c: StrictInt = _w(15)
    stir_passed: StrictInt = _w(5)  # verified, carrier gave no level (bare TN-Validation-Passed)
    stir_failed: StrictInt = _w(40)
    stir_missing: StrictInt = _w(10)
    burst: StrictInt = _w(35)
    flood: StrictInt = _w(30)
    callback: StrictInt = _w(-40)


class ScreeningThresholds(_Strict):
    """Lowest score of each verdict; below ``challenge`` the call is allowed. 101 = never."""

    challenge: StrictInt = Field(30, ge=1, le=101)
    voicemail: StrictInt = Field(60, ge=1, le=101)
    block: StrictInt = Field(80, ge=1, le=101)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.challenge <= self.voicemail <= self.block:
            raise ValueError("thresholds must satisfy challenge <= voicemail <= block")
        return self


class ScreeningWindows(_Strict):
    """Bursts: one caller, many calls. Floods: many distinct callers to one dialled line."""

    burst_seconds: StrictFloat = Field(300, gt=0, le=86_400, allow_inf_nan=False)
    # this many calls in the window, this one included
    burst_calls: StrictInt = Field(4, ge=2, le=10_000)
    flood_seconds: StrictFloat = Field(60, gt=0, le=86_400, allow_inf_nan=False)
    flood_callers: StrictInt = Field(20, ge=2, le=100_000)


class ScreeningConfig(_Strict):
    enabled: StrictBool = True
    # Region for reading a dialled line we cannot place; otherwise the dialled line's own.
    default_region: str | None = None
    callback_days: StrictFloat = Field(
        14, ge=0, le=366, allow_inf_nan=False
    )  # 0 disables callback recognition
    weights: ScreeningWeights = ScreeningWeights()
    thresholds: ScreeningThresholds = ScreeningThresholds()
    windows: ScreeningWindows = ScreeningWindows()
    # Static entries, merged with the lists kept in the store (trustline block/allow ...).
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    # Clinic numbers that are not in any pool (switchboard, fax) but must not be spoofed.
    own_numbers: tuple[str, ...] = ()

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {v!r} (use an ISO code such as FR, US)")
        return v.upper()

    @field_validator("allow", "block")
    @classmethod
    def _entries(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalise_entry(e) for e in v))

    @field_validator("own_numbers")
    @classmethod
    def _own(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for entry in v:
            e164 = normalise_entry(entry)
            if e164.endswith("*"):
                raise ValueError(f"{entry!r}: own numbers are exact numbers, not prefixes")
            out.append(e164)
        return tuple(dict.fromkeys(out))
