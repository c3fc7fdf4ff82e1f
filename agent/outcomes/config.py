"""pools.toml keys of the reputation loop: drift tunables and the ``[reputation]`` section.

``DriftFields`` are the keys ``[defaults]`` and every ``[pools.X]`` gain (None in a pool means
"take [defaults]"); ``ReputationConfig`` is the ``[reputation]`` section. Validation only: no
I/O here except reading the provider's auth file on request, and no live state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from agent.errors import ConfigError

OnFlag = Literal["alert", "rest", "quarantine"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftFields(_Strict):
    """Keys for ``[defaults]``; a pool's own copy of these overrides them."""

    drift_window_minutes: StrictFloat = Field(120.0, ge=10, le=24 * 60, allow_inf_nan=False)
    drift_min_calls: StrictInt = Field(30, ge=5, le=100_000)
    on_drift: OnFlag = "alert"
    on_flag: OnFlag = "alert"


class PoolDriftFields(_Strict):
    drift_window_minutes: StrictFloat | None = Field(None, ge=10, le=24 * 60, allow_inf_nan=False)
    drift_min_calls: StrictInt | None = Field(None, ge=5, le=100_000)
    on_drift: OnFlag | None = None
    on_flag: OnFlag | None = None


_PATH = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


class ProviderConfig(_Strict):
    """A reputation service answering JSON over HTTP, one number per request."""

    name: str = Field("provider", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    # {number}: E.164 with its "+" (URL-encoded); {digits}: the same without "+".
    url: str
    auth_header: str = "Authorization"
    auth_file: Path | None = None  # the header's whole value, e.g. "Bearer abc..."
    score_path: str | None = None  # dotted path in the answer, list items by index: "data.0.score"
    label_path: str | None = None
    flag_score_at_least: float | None = None  # a higher score is worse...
    flag_score_at_most: float | None = None  # ...or, for providers that score trust, lower is
    flag_labels: list[str] = ["spam", "spam likely", "scam likely", "scam", "fraud", "robocall"]
    requests_per_minute: StrictFloat = Field(30.0, gt=0, le=6000, allow_inf_nan=False)
    timeout_seconds: StrictFloat = Field(5.0, gt=0, le=60, allow_inf_nan=False)

    @field_validator("url")
    @classmethod
    def _template(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if "{number}" not in v and "{digits}" not in v:
            raise ValueError("url must contain {number} or {digits}")
        return v

    @field_validator("score_path", "label_path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not _PATH.fullmatch(v):
            raise ValueError("use a dotted path such as data.score or results.0.label")
        return v

    def auth_value(self) -> str | None:
        if self.auth_file is None:
            return None
        try:
            value = self.auth_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                str(self.auth_file), [f"reputation.provider.auth_file: {exc}"]
            ) from None
        if not value or "\n" in value:
            raise ConfigError(
                str(self.auth_file), ["reputation.provider.auth_file: expected one line"]
            )
        return value


class ReputationConfig(_Strict):
    provider: ProviderConfig | None = None
    # Every own number, this often.
    scan_minutes: StrictFloat = Field(60.0, ge=5, le=7 * 24 * 60, allow_inf_nan=False)
