"""Monday 07:00 (the default time zone's): last week's report written to the data dir and
posted to the webhooks.

May: sleep until the next Monday 07:00, write the report files, queue the summary through the
alert outbox (one message per week: the key is the week). Must not: miss a week because the
agent was down at 07:00 (on start, a missing report of last week is made at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from agent.alerts.service import AlertService
from agent.clock import Clock
from agent.config import Config
from agent.outcomes import report
from agent.store import Database
from agent.tasks import stop_task

log = logging.getLogger(__name__)


class WeeklyReporter:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        alerts: AlertService,
        config: Callable[[], Config],
        out_dir: Path,
    ) -> None:
        self._db = db
        self._clock = clock
        self._alerts = alerts
        self._config = config
        self._out = out_dir
        self._task: asyncio.Task[None] | None = None

    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self._config().raw.defaults.timezone)

    def _last_monday(self, now: float) -> datetime:
        """The Monday that starts the last complete week."""
        local = datetime.fromtimestamp(now, self._zone())
        return datetime.combine(
            local.date() - timedelta(days=local.weekday() + 7), datetime.min.time(), self._zone()
        )

    async def run_due(self) -> Path | None:
        """Make last week's report unless it exists (or this week's 07:00 is still ahead)."""
        now = self._clock.now()
        monday = self._last_monday(now)
        due_at = (monday + timedelta(days=7)).replace(hour=7).timestamp()
        week = report.week_of(monday.date())
        html_path = self._out / f"trustline-{week}.html"
        if now < due_at or html_path.exists():
            return None
        data = await report.gather(self._db, self._config(), monday.date())
        html_path, _csv = report.write_report(data, self._out)
        await self._alerts.post(
            "report", f"report-{week}", {"report": report.summary(data), "file": html_path.name}
        )
        log.info("report: %s written to %s", week, html_path)
        return html_path

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weekly-report")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("report: the weekly report failed; retrying in an hour")
            wait = report.next_report_at(self._clock.now(), self._zone()) - self._clock.now()
            await asyncio.sleep(min(max(wait, 1.0), 3600.0))
