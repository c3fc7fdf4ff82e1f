"""What the API and dashboard handlers need, built once by ``agent.build`` and passed in
explicitly (no globals): the admin actions, the read-only views, the token service, the
dashboard sessions, the clock and the current config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from agent.admin.actions import AdminActions
from agent.admin.views import DashboardViews
from agent.clock import Clock
from agent.config import Config
from agent.contact.service import ContactService
from agent.http.security import Sessions
from agent.outbound.policy import local_day
from agent.store import Database


@dataclass
class AdminContext:
    actions: AdminActions
    views: DashboardViews
    read_db: Database  # the dashboard's own connection: its queries never queue before calls
    clock: Clock
    config: Callable[[], Config]
    contact: ContactService | None = None  # POST /api/v1/announce (patient contact)
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.clock)

    def zone(self, pool: str | None = None) -> ZoneInfo:
        config = self.config()
        found = config.pools.get(pool) if pool else None
        if found is not None:
            return found.rules.timezone
        return ZoneInfo(config.raw.defaults.timezone)

    def today(self, pool: str | None = None) -> str:
        return local_day(self.clock.now(), self.zone(pool)).isoformat()
