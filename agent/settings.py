"""Process settings from the environment (``TRUSTLINE_*``), typed and immutable.

Settings say where things are and how the process listens; pool policy lives in pools.toml
(agent.config). Live clients never live here.
"""

from __future__ import annotations

import ipaddress
import os
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent.errors import ConfigError


def example_config_path() -> Path:
    """The pools.toml shipped with the package: the embedded default."""
    return Path(str(resources.files("agent") / "examples" / "pools.toml"))


SYSTEM_DATA_DIR = Path("/var/lib/trustline")


def default_data_dir() -> Path:
    """Where the store lives when neither TRUSTLINE_DATA_DIR nor --data-dir says.

    The same for ``run`` and every admin command, whatever the current folder:
    /var/lib/trustline when that folder exists (a system install creates it, for the agent's
    user), else the user's state folder ($XDG_STATE_HOME/trustline, by default
    ~/.local/state/trustline), which ``trustline run`` creates on a fresh machine.
    """
    if SYSTEM_DATA_DIR.is_dir():
        return SYSTEM_DATA_DIR
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "trustline"


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` to a (host, port) pair."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRUSTLINE_", frozen=True, extra="ignore")

    config: Path = Field(default_factory=example_config_path)
    data_dir: Path = Field(default_factory=default_data_dir)
    agi_listen: str = "127.0.0.1:4573"
    # Peers allowed to open FastAGI sessions (addresses or networks, comma separated).
    agi_allow: str = "127.0.0.1/32,::1/128"
    http_listen: str = "127.0.0.1:8080"
    # Both set: the HTTP listener (API, dashboard, probes) speaks TLS with this PEM pair.
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    deadline_ms: int = Field(250, ge=10, le=10_000)
    # FastAGI sessions being decided at once; beyond, the route's fallback answers at once.
    agi_max_in_flight: int = Field(256, ge=1, le=100_000)
    # `trustline run`'s event loop; "asyncio" is the standard library's (for debugging).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    config_poll_seconds: float = Field(2.0, gt=0)
    # sqlite:///path or postgresql://user@host/db (several agents); default: data_dir's SQLite.
    database_url: SecretStr | None = None  # secret: a URL may hold a password
    database_pool_size: int = Field(10, ge=1, le=500)
    # The key of callee/caller hashes: the same file on every host sharing one database.
    callee_key_file: Path | None = None

    ami_host: str = "127.0.0.1"
    ami_port: int = Field(5038, ge=1, le=65535)
    ami_user: str | None = None
    ami_secret: SecretStr | None = None
    ami_secret_file: Path | None = None
    ami_md5_challenge: bool = False

    recordings_dir: Path = Path("/var/spool/asterisk/monitor")
    keyring: Path | None = None
    retention_days: int = Field(365, ge=1)
    recordings_quiet_seconds: float = Field(600.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, v: Path) -> Path:
        # Messages name the folder in full; a relative one is read once, here.
        return Path(os.path.abspath(v.expanduser()))

    @field_validator("agi_listen", "http_listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("agi_allow")
    @classmethod
    def _check_allow(cls, v: str) -> str:
        parts = [part.strip() for part in v.split(",") if part.strip()]
        if not parts:
            # Empty must not mean "everybody": the PBX's address has to be named.
            raise ValueError(
                "empty: name the PBX addresses allowed to connect, e.g. 127.0.0.1/32,::1/128"
            )
        for part in parts:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an address or network") from None
        return v

    @property
    def agi_address(self) -> tuple[str, int]:
        return parse_listen(self.agi_listen)

    @property
    def http_address(self) -> tuple[str, int]:
        return parse_listen(self.http_listen)

    @property
    def agi_allowed_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(p.strip(), strict=False)
            for p in self.agi_allow.split(",")
            if p.strip()
        )

    @property
    def database_path(self) -> Path:
        return self.data_dir / "trustline.sqlite3"

    @property
    def database(self) -> str:
        """The store's URL (TRUSTLINE_DATABASE_URL, else the data folder's SQLite file)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.database_path}"

    @property
    def keyring_path(self) -> Path:
        return self.keyring or self.data_dir / "keyring"

    @property
    def hash_key_path(self) -> Path:
        return self.callee_key_file or self.data_dir / "callee-hash.key"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI overrides on top. Errors become ConfigError."""
    from pydantic import ValidationError

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)  # type: ignore[arg-type]  # pydantic coerces from the env/CLI strings
    except ValidationError as exc:
        problems = [
            f"TRUSTLINE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        ]
        raise ConfigError("environment", problems) from None
