"""The /readyz checks (also the system watch's alerts): each answers ``(name, ok, detail)``
from the object it watches, built once the agent has started them.

May: read-only questions to the store, the AMI link, the recordings service and the folder
MixMonitor writes to. Must not: write to the store (a probe never queues in front of calls).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import StoreError

if TYPE_CHECKING:
    from prometheus_client import Counter

    from agent.ami.link import AmiLink
    from agent.config import Config
    from agent.recordings.service import RecordingsService
    from agent.settings import Settings
    from agent.store import Database

Answer = tuple[str, bool, str]


def healthy(probe: Callable[[], Awaitable[Answer]]) -> Callable[[], Awaitable[tuple[bool, str]]]:
    """A probe as the system watch asks it (agent/alerts/watch.py): ok and why."""

    async def check() -> tuple[bool, str]:
        _name, ok, detail = await probe()
        return ok, detail

    return check


def counted(counter: Counter) -> float:
    """A counter's total over all its labels (the deadline misses the system watch rates)."""
    samples = (s for m in counter.collect() for s in m.samples)
    return sum(s.value for s in samples if s.name.endswith("_total"))


@dataclass(frozen=True)
class Probes:
    settings: Settings
    config_in_force: Callable[[], Config]
    db: Database
    ami_link: AmiLink | None  # None: TRUSTLINE_AMI_USER is not set
    recordings_service: RecordingsService

    async def config(self) -> Answer:
        return "config", True, self.config_in_force().source

    async def ami(self) -> Answer:
        if self.ami_link is None:
            return "ami", True, "disabled: TRUSTLINE_AMI_USER is not set"
        ok, detail = self.ami_link.status()
        return "ami", ok, detail

    async def recordings(self) -> Answer:
        folder = self.settings.recordings_dir
        if not folder.is_dir():
            # No MixMonitor folder on this host: nothing is recorded here, nothing to protect.
            return "recordings", True, f"not in use: {folder} does not exist"
        ok, detail = self.recordings_service.readiness()
        return "recordings", ok, detail

    async def store(self) -> Answer:
        # Read-only: a probe must never queue a write in front of calls. A read-only file or
        # folder shows through access(); a full disk shows in the writes calls make.
        try:
            await self.db.fetchone("SELECT version FROM state_version WHERE id = 1")
        except StoreError as exc:  # e.g. PostgreSQL unreachable: say why (URL redacted)
            return "store", False, str(exc)
        path = getattr(self.db, "path", None)  # SQLite: a read-only file or folder shows here
        if isinstance(path, Path) and not (
            os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
        ):
            return "store", False, f"{path} is not writable"
        return "store", True, self.db.description
