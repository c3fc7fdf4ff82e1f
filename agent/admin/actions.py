"""The state changes an admin edge offers (API and dashboard alike), each followed by its
admin audit row: spam report, reinstate, acknowledge an alert, edit a screening list, create
or revoke a token, decrypt a recording.

May: call the feature services and AdminAudit. Must not: check roles (the HTTP edge does,
before calling), or put a patient number in an audit row or a result (list entries are named
by an opaque handle and shown masked).
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass
from hashlib import sha256
from typing import BinaryIO

from agent import phone
from agent.admin.audit import Actor, AdminAudit
from agent.alerts.service import AlertService
from agent.errors import BadRequest
from agent.outbound.service import OutboundService, ReportResult
from agent.recordings.repo import RecordingRow
from agent.recordings.service import RecordingsService
from agent.screening.lists import is_prefix
from agent.screening.service import ScreeningService
from agent.tokens.repo import TokenRow
from agent.tokens.service import TokenService


def shown_entry(entry: str) -> str:
    """A list entry as pages and API answers show it: prefixes whole, numbers masked."""
    return entry if is_prefix(entry) else phone.mask(entry)


@dataclass(frozen=True, slots=True)
class ListEdit:
    kind: str
    handle: str
    shown: str
    changed: bool


class AdminActions:
    def __init__(
        self,
        *,
        outbound: OutboundService | None,
        alerts: AlertService | None,
        screening: ScreeningService | None,
        recordings: RecordingsService | None,
        tokens: TokenService,
        audit: AdminAudit,
        hash_key: bytes,
    ) -> None:
        self._outbound = outbound
        self._alerts = alerts
        self._screening = screening
        self._recordings = recordings
        self.tokens = tokens
        self.audit = audit
        self._hash_key = hash_key

    # -- helpers -------------------------------------------------------------------------
    def outbound(self) -> OutboundService:
        service = self._outbound
        if service is None:
            raise BadRequest("the outbound service is not running")
        return service

    def screening(self) -> ScreeningService:
        if self._screening is None:
            raise BadRequest("screening is not running")
        return self._screening

    def recordings(self) -> RecordingsService:
        if self._recordings is None:
            raise BadRequest("recordings are not running")
        return self._recordings

    def alerts(self) -> AlertService:
        if self._alerts is None:
            raise BadRequest("alerts are not running")
        return self._alerts

    def handle(self, kind: str, entry: str) -> str:
        """An opaque, stable name for a list entry: a keyed hash, so a page can offer
        "remove" without holding the number, and the handle cannot be reversed offline."""
        mac = hmac.new(self._hash_key, f"list:{kind}:{entry}".encode(), sha256)
        return mac.hexdigest()[:20]

    # -- outbound --------------------------------------------------------------------------
    async def report_spam(
        self,
        actor: Actor,
        number: str,
        source: str,
        report_id: str | None,
        *,
        channel: str = "api",
    ) -> ReportResult:
        """A spam report from the API (or the dashboard: ``channel``). With ``report_id`` (the
        client's idempotency key) a retried POST counts once, as an AMI event received by
        several agents does."""
        source = source.strip()[:40] or channel
        event_id = f"{channel}:{actor.name}:{report_id}" if report_id else None
        result = await self.outbound().report_spam(number, f"{channel}:{source}", event_id=event_id)
        target = result.number  # the service masks a number that is not ours
        if not result.duplicate:
            await self.audit.record(
                actor,
                "spam_report",
                target,
                source=source,
                ours=result.ours,
                reports_today=result.reports_today,
                quarantined=result.quarantined,
            )
        return result

    async def reinstate(self, actor: Actor, number: str) -> tuple[str, bool]:
        service = self.outbound()
        e164 = service.resolve_number(number)
        changed = await service.reinstate(e164)
        await self.audit.record(actor, "reinstate", e164, changed=changed)
        return e164, changed

    # -- alerts ----------------------------------------------------------------------------
    async def ack(self, actor: Actor, incident_id: int) -> bool:
        changed = await self.alerts().ack(incident_id)
        await self.audit.record(actor, "alert_ack", f"alert {incident_id}", changed=changed)
        return changed

    # -- screening lists -------------------------------------------------------------------
    async def list_add(self, actor: Actor, kind: str, text: str, note: str) -> ListEdit:
        entry, added = await self.screening().add_entry(kind, text, note[:200])
        edit = ListEdit(kind, self.handle(kind, entry), shown_entry(entry), added)
        await self.audit.record(
            actor, "list_add", f"{kind} {edit.shown}", entry=edit.handle, added=added
        )
        return edit

    async def list_remove(self, actor: Actor, kind: str, handle: str) -> ListEdit:
        service = self.screening()
        for item in await service.entries(kind):
            if hmac.compare_digest(self.handle(kind, item.entry), handle):
                _, removed = await service.remove_entry(kind, item.entry)
                edit = ListEdit(kind, handle, shown_entry(item.entry), removed)
                await self.audit.record(
                    actor, "list_remove", f"{kind} {edit.shown}", entry=handle, removed=removed
                )
                return edit
        return ListEdit(kind, handle, "-", False)

    # -- tokens ----------------------------------------------------------------------------
    async def token_create(
        self, actor: Actor, name: str, role: str, expires_days: float | None
    ) -> tuple[TokenRow, str]:
        row, secret = await self.tokens.create(
            name, role, expires_days=expires_days, created_by=actor.name
        )
        await self.audit.record(actor, "token_create", f"token {row.name}", token_role=row.role)
        return row, secret

    async def token_revoke(self, actor: Actor, name: str) -> bool:
        revoked = await self.tokens.revoke(name)
        await self.audit.record(actor, "token_revoke", f"token {name}", changed=revoked)
        return revoked

    # -- recordings ------------------------------------------------------------------------
    async def decrypt(
        self,
        actor: Actor,
        recording_id: int,
        out: BinaryIO,
        reason: str,
        stop: threading.Event | None = None,
    ) -> RecordingRow:
        """Stream one recording's audio; the recordings service writes its own audit row
        (as for the CLI), and the admin audit says who asked, with which role, from where."""
        if not reason.strip():
            raise BadRequest("decrypting needs a reason")
        await self.audit.record(
            actor, "recording_decrypt", f"recording {recording_id}", reason=reason.strip()[:200]
        )
        return await self.recordings().decrypt(
            recording_id,
            out,
            operator=f"{actor.name} ({actor.role}, {actor.remote})",
            reason=reason,
            stop=stop,
        )
