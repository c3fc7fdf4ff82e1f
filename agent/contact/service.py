"""Announce: pin the caller ID a call will present to its callee, and queue the pre-call SMS.

May: ask the outbound service for the number a call would get now (counted as that call's),
keep pins in its own tables and in memory, queue the SMS in the outbox, answer the outbound
service's pin look-ups and screening's callback look-ups from memory (no I/O on a call's path;
writes go in the background). Must not: send an SMS itself (the outbox's sender does, in the
background), keep a patient number (pins know the callee by keyed hash; the outbox seals the
destination), or put anything medical in a message (templates carry only the centre, the
number and the call's date and time).

Pins made by another process (``trustline announce``, another agent) are picked up by a
refresh every ``refresh_seconds``; the same refresh releases expired pins and gives their
unused unit back to the outbound service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import phonenumbers

from agent import contract, phone
from agent.clock import Clock
from agent.config import Config, PoolConfig
from agent.contact.config import ContactConfig
from agent.contact.outbox import SmsOutbox
from agent.contact.repo import ContactRepo, Pin
from agent.contact.templates import render
from agent.errors import BadData, BadRequest, StoreError
from agent.outbound.policy import local_day
from agent.outbound.service import OutboundService, PinnedNumber
from agent.store import Database
from agent.tasks import stop_task

log = logging.getLogger(__name__)

CALLBACK_MEMORY_DAYS = 31  # pins remembered for callbacks (screening's window is shorter)
SMS_GRACE_SECONDS = 300.0  # an SMS for a call placed "now" may still go out this late


@dataclass(frozen=True, slots=True)
class Announcement:
    pool: str
    number: str  # the pinned caller ID (ours, E.164)
    name: str
    call_at: float
    expires_at: float
    sms_at: float | None  # when the SMS goes out; None without --sms
    reused: bool  # an open pin for this callee and purpose already existed


class ContactService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        hash_key: bytes,
        outbound: OutboundService,
        contact: Callable[[], ContactConfig],
        outbox: SmsOutbox,
        *,
        refresh_seconds: float = 2.0,
    ) -> None:
        self._repo = ContactRepo(db)
        self._clock = clock
        self._hash_key = hash_key
        self._outbound = outbound
        self._contact = contact
        self._outbox = outbox
        self._refresh_seconds = refresh_seconds
        self._open: dict[tuple[str, str], Pin] = {}  # (callee hash, purpose) -> open pin
        self._pinned_at: dict[str, float] = {}  # callee hash -> latest pin time (callbacks)
        self._background: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def _config(self) -> Config:
        return self._outbound.config

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.refresh()
        except StoreError as exc:  # PostgreSQL not there yet: the refresh loop retries
            log.error("contact: pins not loaded (%s); retrying", exc)
        self._task = asyncio.create_task(self._refresh_loop(), name="contact-pins")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Wait for the pin writes queued so far."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def refresh(self) -> None:
        """Read pins from the store (other processes make them) and release expired ones."""
        now = self._clock.now()
        open_pins = await self._repo.open_pins()
        recent = await self._repo.recent_pins(now - CALLBACK_MEMORY_DAYS * 86400.0)
        live: dict[tuple[str, str], Pin] = {}
        for pin in open_pins:
            if pin.expires_at > now:
                live[(pin.callee_hash, pin.purpose)] = pin
            elif await self._repo.release(pin.id, now, "expired"):
                # The call never came: its unit goes back (only the releasing process does it).
                if pin.used_at is None:
                    self._outbound.give_back(pin.number, pin.reserved_day)
                log.info("contact: pin %d on %s expired unused", pin.id, phone.mask(pin.number))
        self._open = live
        self._pinned_at = recent

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("contact: could not refresh pins from the store; will retry")

    # -- announce ----------------------------------------------------------------------------
    async def announce(
        self,
        purpose: str,
        callee: str,
        *,
        case_ref: str | None = None,
        at: float | None = None,
        sms: bool = False,
        area: str | None = None,
    ) -> Announcement:
        """Pin the caller ID the call for ``purpose`` will present to ``callee`` (an open pin
        is kept), and with ``sms`` queue the pre-call SMS."""
        config, contact = self._config, self._contact()  # as they were when asked
        pool, e164, now, call_at = self._checked(purpose, callee, at, sms, contact)
        pin_hours = contact.pin_hours_for(pool.name)
        callee_hash = phone.keyed_hash(self._hash_key, e164)
        pin = self._open.get((callee_hash, purpose))
        reused = pin is not None and pin.expires_at > now and pin.pool == pool.name
        if not reused:
            pin = await self._pin(pool.name, purpose, e164, callee_hash, case_ref, now, call_at,
                                  pin_hours, area)  # fmt: skip
        assert pin is not None
        cfg = config.numbers.get(pin.number)
        sms_at = None
        if sms:
            sms_at = await self._queue_sms(pin, pool, contact, e164, now, call_at)
        log.info(
            "contact: %s pinned %s for a %s call (%s)",
            "kept" if reused else "new",
            phone.mask(pin.number),
            purpose,
            "SMS queued" if sms else "no SMS",
        )
        return Announcement(
            pool.name, pin.number, cfg.name if cfg else "", pin.call_at, pin.expires_at,
            sms_at, reused,
        )  # fmt: skip

    def _checked(
        self, purpose: str, callee: str, at: float | None, sms: bool, contact: ContactConfig
    ) -> tuple[PoolConfig, str, float, float]:
        """The pool, the callee as E.164, now and the call's time; BadRequest / BadData when
        the announcement cannot be taken."""
        pool = self._config.pool_for(purpose)
        if pool is None:
            raise BadRequest(f"no pool serves purpose {purpose!r}")
        try:
            e164 = phone.to_e164(callee, pool.rules.region)
        except phone.InvalidNumber as exc:
            raise BadData(f"the callee is not a phone number ({exc})") from None
        now = self._clock.now()
        call_at = now if at is None else at
        tz = pool.rules.timezone
        pin_hours = contact.pin_hours_for(pool.name)
        if call_at < now - 60:
            raise BadRequest("the planned call time is in the past")
        if call_at > now + pin_hours * 3600.0:
            raise BadRequest(f"the call is beyond the pin ({pin_hours:g} h): announce it later")
        if local_day(call_at, tz) != local_day(now, tz):
            raise BadRequest("announce on the day of the call (the number's cap counts today)")
        if sms and (contact.sms is None or purpose not in contact.templates):
            missing = "[contact.sms]" if contact.sms is None else f"[contact.templates] {purpose}"
            raise BadRequest(f"a pre-call SMS needs {missing} in pools.toml")
        return pool, e164, now, call_at

    async def _queue_sms(
        self,
        pin: Pin,
        pool: PoolConfig,
        contact: ContactConfig,
        e164: str,
        now: float,
        call_at: float,
    ) -> float:
        """Queue the pin's pre-call SMS for the call at ``call_at`` (one SMS per pin, however
        often it is announced); when it goes out."""
        sms_at = max(now, call_at - contact.lead_minutes_for(pool.name) * 60.0)
        when = datetime.fromtimestamp(call_at, pool.rules.timezone)
        national = phonenumbers.format_number(
            phonenumbers.parse(pin.number, None), phonenumbers.PhoneNumberFormat.NATIONAL
        )
        text = render(
            contact.templates[pin.purpose],
            centre=contact.centre,
            number=national,
            date=when.strftime(contact.date_format),
            time=when.strftime(contact.time_format),
        )
        await self._outbox.enqueue(
            f"pin-{pin.id}",
            purpose=pin.purpose,
            pool=pool.name,
            callee_hash=pin.callee_hash,
            to=e164,
            text=text,
            send_at=sms_at,
            expires_at=max(call_at, now + SMS_GRACE_SECONDS),
        )
        return sms_at

    async def _pin(
        self,
        pool: str,
        purpose: str,
        e164: str,
        callee_hash: str,
        case_ref: str | None,
        now: float,
        call_at: float,
        pin_hours: float,
        area: str | None,
    ) -> Pin:
        decision = await self._outbound.reserve(purpose, e164, area)
        if decision.status != contract.STATUS_OK or decision.number is None:
            raise BadData(f"no number to pin: the pool answered {decision.reason}")
        tz = self._config.pools[pool].rules.timezone
        stale = await self._repo.open_pin(callee_hash, purpose)
        if stale is not None and await self._repo.release(stale.id, now, "replaced"):
            if stale.used_at is None:
                self._outbound.give_back(stale.number, stale.reserved_day)
        pin = Pin(
            0, callee_hash, purpose, pool, decision.number, case_ref, now, call_at,
            now + pin_hours * 3600.0, local_day(now, tz).isoformat(), None,
        )  # fmt: skip
        pin = replace(pin, id=await self._repo.add_pin(pin))
        self._open[(callee_hash, purpose)] = pin
        self._pinned_at[callee_hash] = now
        return pin

    # -- asked on a call's path (outbound's PinSource; screening's callbacks) ----------------
    def pinned(self, purpose: str, callee_hash: str, now: float) -> Pin | None:
        pin = self._open.get((callee_hash, purpose))
        return pin if pin is not None and pin.expires_at > now else None

    def used(self, pin: PinnedNumber, now: float) -> None:
        assert isinstance(pin, Pin)
        self._open.pop((pin.callee_hash, pin.purpose), None)
        self._later(self._close(pin, now, "used"))

    def dropped(self, pin: PinnedNumber, reason: str, now: float) -> None:
        assert isinstance(pin, Pin)
        self._open.pop((pin.callee_hash, pin.purpose), None)
        log.warning(
            "contact: pin %d on %s dropped (%s): the call gets the usual choice",
            pin.id, phone.mask(pin.number), reason,
        )  # fmt: skip
        self._later(self._close(pin, now, reason))

    def called_recently(self, callee_hash: str, since: float) -> bool:
        """A pin (and so an SMS naming our number) went to this callee since ``since``."""
        return self._pinned_at.get(callee_hash, float("-inf")) >= since

    async def _close(self, pin: Pin, now: float, reason: str) -> None:
        if reason == "used":
            await self._repo.mark_used(pin.id, now)
        await self._repo.release(pin.id, now, reason)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("contact: could not record a pin's end; the refresh will retry")

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
