"""The ``[alerts]`` section of pools.toml, and reading the webhook secrets it names.

May: validate the section and read secret files on request. Must not: keep secrets in the
config object (they are read into ``Webhook`` values the deliverer holds) or log them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from agent.errors import ConfigError

MIN_SECRET_BYTES = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Strict):
    url: str
    secret_file: Path

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) > 2000:
            raise ValueError("webhook url must start with http:// or https://")
        return v


class AlertsConfig(_Strict):
    webhooks: list[WebhookConfig] = []
    # How long the deliverer keeps retrying one message before it gives up (and logs it).
    retry_hours: StrictFloat = Field(24.0, gt=0, le=24 * 14, allow_inf_nan=False)
    # Deadline misses (FastAGI answered with the fallback) per 5 minutes that raise an alert.
    deadline_misses_per_5min: StrictInt = Field(10, ge=1, le=1_000_000)


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    secret: bytes = field(repr=False)


def load_webhooks(config: AlertsConfig, source: str = "pools.toml") -> list[Webhook]:
    """Read each webhook's secret file. Raises ConfigError naming every unreadable file."""
    hooks, problems = [], []
    for i, hook in enumerate(config.webhooks):
        where = f"alerts.webhooks[{i}].secret_file"
        try:
            secret = hook.secret_file.read_bytes().strip()
        except OSError as exc:
            problems.append(f"{where}: cannot read {hook.secret_file}: {exc.strerror or exc}")
            continue
        if len(secret) < MIN_SECRET_BYTES:
            problems.append(f"{where}: secret is shorter than {MIN_SECRET_BYTES} bytes")
            continue
        hooks.append(Webhook(hook.url, secret))
    if problems:
        raise ConfigError(source, problems)
    return hooks
