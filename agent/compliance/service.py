"""Compliance use cases: may this call go out now, opt-outs (CLI, IVR over AMI), retention, and
the periodic work of the audit chain.

Policy comes from agent.compliance.policy; this module sequences I/O around it. Opt-outs are
held in memory as keyed hashes and reloaded when the store's opt-out version moves (checked
every ``refresh_seconds``), so an opt-out added from the CLI stops calls within seconds.
Each set read is also copied to ``snapshot`` (snapshot.py): when the store does not answer at
start, the agent decides from that copy; with no copy either, the set is unknown and no call
to a patient goes out (``outside_window``, reason ``optouts_unknown``, a retry in a minute)
until the store answers. Calls to extensions are not held back.
Attempts are counted from memory when a table tailed from the store's call_audit at the same
pace proves the callee had no call in the period, else by the store (attempts.py), plus the
calls this process let out whose rows are not read yet. A callee the store must count while it
cannot is held back the same way (reason ``attempts_unknown``). Never logs a full number
(phone.mask).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

from agent import phone
from agent.clock import Clock
from agent.compliance import policy, snapshot
from agent.compliance.attempts import AttemptIndex, Take
from agent.compliance.callees import Callees, Entry
from agent.compliance.chain import AuditChain
from agent.compliance.config import ComplianceConfig
from agent.compliance.repo import ComplianceRepo
from agent.compliance.retention import PurgePlan, Retention
from agent.errors import BadRequest, StoreError
from agent.store import Database

log = logging.getLogger(__name__)

OPTOUT_USEREVENT = "OptOut"
_WINDOW_STATES = 4096
_PURPOSE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class ComplianceService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        hash_key: bytes,
        config: ComplianceConfig,
        *,
        region: str = "FR",
        timezone: str = "Europe/Paris",
        snapshot: Path | None = None,
    ) -> None:
        self._repo = ComplianceRepo(db)
        self._clock = clock
        self._hash_key = hash_key
        self.chain = AuditChain(self._repo)
        self._retention = Retention(db, self._repo, self.chain)
        self._optouts: set[tuple[str, str]] = set()
        self._opted_purposes: frozenset[str] = frozenset()  # the purposes anyone opted out of
        self._version = -1
        self._known = False  # the opt-out set was read (from the store, or else the copy)
        self._snapshot = snapshot
        self._attempts = AttemptIndex(self._repo)
        self._callees = Callees(hash_key)
        self._tasks: list[asyncio.Task[None]] = []
        self._follow_attempts = True
        self.apply_config(config, region=region, timezone=timezone)

    @property
    def repo(self) -> ComplianceRepo:
        return self._repo

    def apply_config(self, config: ComplianceConfig, *, region: str, timezone: str) -> None:
        self._config = config
        self._region = region
        self._timezone = timezone
        self._rules = functools.lru_cache(maxsize=256)(config.rules_for)
        # (purpose, zone) -> the window's state, kept until its next change (policy.WindowState)
        self._windows: dict[tuple[str, str], policy.WindowState] = {}
        limits = config.limits.root
        limited = [p for p in limits if p != "default"]
        if "default" in limits:
            limited.append("*")  # every purpose: the index reads them all
        self._attempts.configure(
            limited, max((x.days for x in limits.values()), default=0) * 86400.0
        )

    # -- life cycle ------------------------------------------------------------------------
    async def start(
        self,
        *,
        refresh_seconds: float | None = 2.0,
        chain_seconds: float = 10.0,
        purge_seconds: float = 3600.0,
        follow_attempts: bool = True,
    ) -> None:
        """``follow_attempts=False`` (a command): attempts are counted by the store alone, so
        the call history is not read at start."""
        self._follow_attempts = follow_attempts
        try:
            await self.refresh()
        except StoreError:
            await self._from_snapshot()
            raise  # the agent starts this service again until the store answers
        if refresh_seconds:  # opt-outs and attempts made by other processes
            self._tasks += [
                asyncio.create_task(self._every(refresh_seconds, self.refresh), name="optouts"),
                asyncio.create_task(self._every(chain_seconds, self.chain_work), name="chain"),
                asyncio.create_task(self._every(purge_seconds, self.purge_work), name="purge"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _every(self, seconds: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("compliance: periodic job failed; will retry")

    async def refresh(self) -> None:
        """Reload the opt-out set when another process (CLI, another agent) changed it."""
        if self._follow_attempts:
            await self._attempts.refresh(self._clock.now())
        version = await self._repo.optout_version()
        if version != self._version:
            self._set_optouts(await self._repo.optouts())
            self._version = version
            if self._snapshot is not None:
                try:
                    await asyncio.to_thread(
                        snapshot.write, self._snapshot, self._optouts, self._clock.now()
                    )
                except OSError as exc:
                    log.warning("compliance: cannot keep the opt-out copy: %s", exc)
        self._known = True

    async def _from_snapshot(self) -> None:
        """The store did not answer: decide from the last copy, if there is one."""
        if self._known or self._snapshot is None:
            return
        try:
            found, read_at = await asyncio.to_thread(snapshot.read, self._snapshot)
        except snapshot.SnapshotError as exc:
            log.error("compliance: opt-outs unknown until the store answers: %s", exc)
            return
        self._set_optouts(found)
        self._known = True
        age = (self._clock.now() - read_at) / 3600.0
        log.warning(
            "compliance: using the opt-out copy read %.1f h ago until the store answers", age
        )

    def _set_optouts(self, optouts: set[tuple[str, str]]) -> None:
        self._optouts = optouts
        self._opted_purposes = frozenset(purpose for _, purpose in optouts)

    async def chain_work(self) -> None:
        now = self._clock.now()
        await self.chain.extend(now)
        await self.chain.anchor(now)

    async def purge_work(self) -> None:
        await self.chain.extend(self._clock.now())
        for plan in await self.purge(dry_run=False):
            if plan.rows:
                log.info(
                    "retention: deleted %d %s rows older than %d days",
                    plan.rows,
                    plan.table,
                    plan.days,
                )

    # -- numbers ---------------------------------------------------------------------------
    def _callee(self, callee: str) -> Entry | None:
        """A callee read once: its numbers, hashes and zone; None for an extension or junk."""
        return self._callees.get(callee, self._region, self._timezone)

    def _resolve(self, number: str) -> tuple[str, str]:
        found = self._callee(number)
        if found is None:
            raise BadRequest(f"not a phone number: {phone.mask(number)}")
        return found[0], found[1]

    @staticmethod
    def _check_purpose(purpose: str) -> str:
        if not purpose or len(purpose) > 32 or not set(purpose) <= _PURPOSE_CHARS:
            raise BadRequest("purpose: use letters, digits, '-' or '_' (at most 32)")
        return purpose

    # -- deciding --------------------------------------------------------------------------
    def _quick(
        self, purpose: str, rules: policy.PurposeRules, callee: str, now: float
    ) -> tuple[policy.Verdict, Entry | None]:
        """Opt-out and window from memory; attempts not counted yet (pass 0). Also returns the
        callee as read (None for an extension or junk, or when no rule needs it)."""
        if rules.unrestricted and self._known and purpose not in self._opted_purposes:
            # No window, no limit, nobody opted out of this purpose: nothing to read the callee
            # for (reading a number is the dearest step of a decision).
            return policy.decide(
                rules, now=now, zone=self._timezone, opted_out=False, attempts=0
            ), None
        found = self._callee(callee)
        if found is None:  # an extension or junk: the window in the centre's zone still holds
            zone, opted = self._timezone, False
        else:
            zone = found[2]
            if not self._known:
                return policy.optouts_unknown(zone, now), found
            opted = (found[1], purpose) in self._optouts
        state = self._window(purpose, rules, zone, now)
        verdict = policy.decide(rules, now=now, zone=zone, opted_out=opted, attempts=0, state=state)
        return verdict, found

    def _window(
        self, purpose: str, rules: policy.PurposeRules, zone: str, now: float
    ) -> policy.WindowState | None:
        """The window's state for ``purpose`` in ``zone`` at ``now``: computed once, then
        reused by every call until it may change (an interval starts or ends, or midnight)."""
        if rules.window is None and rules.calendar is None:
            return None
        key = (purpose, zone)
        state = self._windows.get(key)
        if state is None or not state.at <= now < state.until:
            state = policy.window_state(rules.window, rules.calendar, ZoneInfo(zone), now)
            if len(self._windows) >= _WINDOW_STATES:
                self._windows.clear()  # purposes x zones: a bound that traffic never reaches
            self._windows[key] = state
        return state

    def check_offline(self, purpose: str, callee: str, uniqueid: str = "") -> policy.Verdict:
        """``check`` without I/O (a deadline path): windows, opt-outs, and the attempt limit
        when memory proves the callee had no call in the period; otherwise held back."""
        now = self._clock.now()
        verdict, rules, take = self._to_take(purpose, callee, uniqueid, now)
        return verdict if take is None else self._limited(rules, verdict, take.known(), now)

    async def check(self, purpose: str, callee: str, uniqueid: str = "") -> policy.Verdict:
        """May a call for ``purpose`` go to ``callee`` now? Under an attempt limit, a call
        allowed is counted at once (``uniqueid``: the AGI request's) and two at once cannot
        both take the last attempt (attempts.Take); ``release`` one that does not go out."""
        now = self._clock.now()
        verdict, rules, take = self._to_take(purpose, callee, uniqueid, now)
        if take is None:
            return verdict
        try:
            attempts: int | None = await take.counted()
        except StoreError as exc:
            log.warning(
                "compliance: earlier calls to %s not counted (%s); call held back",
                phone.mask(callee), exc,
            )  # fmt: skip
            attempts = None
        return self._limited(rules, verdict, attempts, now)

    def _to_take(
        self, purpose: str, callee: str, uniqueid: str, now: float
    ) -> tuple[policy.Verdict, policy.PurposeRules, Take | None]:
        """The verdict of every rule but the attempt limit, and the attempt this call would
        take when that limit is still to be checked (else None)."""
        rules = self._rules(purpose)
        verdict, found = self._quick(purpose, rules, callee, now)
        if not verdict.allowed or rules.limit is None or found is None:
            return verdict, rules, None
        hashes = self._callees.audit_hashes(callee, self._region, found)
        written = self._callees.written(callee, self._region, found)
        call = ((written, purpose), now, uniqueid)
        since = now - rules.limit.seconds
        return verdict, rules, Take(self._attempts, hashes, since, rules.limit.attempts, call)

    @staticmethod
    def _limited(
        rules: policy.PurposeRules, verdict: policy.Verdict, attempts: int | None, now: float
    ) -> policy.Verdict:
        """An allowed verdict against the attempt limit (None: not counted, held back)."""
        assert rules.limit is not None
        if attempts is None:
            return policy.attempts_unknown(verdict.zone, now)
        if attempts < rules.limit.attempts:
            return verdict
        return policy.decide(rules, now=now, zone=verdict.zone, opted_out=False, attempts=attempts)

    def release(self, purpose: str, callee: str, uniqueid: str = "") -> None:
        """A call ``check`` let through did not go out after all: it is no attempt."""
        if self._rules(purpose).limit is None:
            return
        found = self._callee(callee)
        if found is not None:
            written = self._callees.written(callee, self._region, found)
            self._attempts.forget((written, purpose), uniqueid)

    async def explain(self, purpose: str, callee: str) -> list[tuple[str, str, str]]:
        """Every rule for this call: (rule, passes|stops|not set, detail)."""
        now = self._clock.now()
        rules = self._rules(self._check_purpose(purpose))
        _, hashed = self._resolve(callee)
        found = self._callee(callee)
        assert found is not None
        zone = found[2]
        out = [("time zone", "info", zone)]
        opted = (hashed, purpose) in self._optouts
        out.append(("opt-out", "stops" if opted else "passes", "opted out" if opted else ""))
        if rules.limit is None:
            out.append(("attempt limit", "not set", ""))
        else:
            hashes = self._callees.audit_hashes(callee, self._region, found)
            n = await self._attempts.count(hashes, purpose, now - rules.limit.seconds)
            stop = n >= rules.limit.attempts
            text = f"{n} of {rules.limit.attempts} in the last {rules.limit.days} days"
            out.append(("attempt limit", "stops" if stop else "passes", text))
        if rules.window is None and rules.calendar is None:
            out.append(("window", "not set", "unrestricted"))
        else:
            v = policy.decide(rules, now=now, zone=zone, opted_out=False, attempts=0)
            shown = rules.window.text if rules.window else "any time"
            cal = f", holidays {rules.calendar}" if rules.calendar else ""
            detail = f"{shown}{cal}" + (f"; {v.detail}; next {v.next_window}" if v.detail else "")
            out.append(("window", "passes" if v.allowed else "stops", detail))
        return out

    # -- opt-outs --------------------------------------------------------------------------
    async def add_optout(
        self, number: str, purpose: str, source: str, *, event_id: str | None = None,
        actor: str | None = None,
    ) -> bool:  # fmt: skip
        """Record a callee's wish not to be called for ``purpose``; True when new."""
        e164, hashed = self._resolve(number)
        purpose = self._check_purpose(purpose)
        now = self._clock.now()
        added = await self._repo.add_optout(hashed, purpose, now, source, event_id)
        if actor is not None:
            await self._admin(now, actor, "optout_add", hashed, purpose)
        self._optouts.add((hashed, purpose))
        self._opted_purposes |= {purpose}
        log.info("compliance: %s opted out of %s (%s)", phone.mask(e164), purpose, source)
        return added

    async def remove_optout(self, number: str, purpose: str, *, actor: str) -> bool:
        e164, hashed = self._resolve(number)
        purpose = self._check_purpose(purpose)
        now = self._clock.now()
        removed = await self._repo.remove_optout(hashed, purpose, now, "cli")
        await self._admin(now, actor, "optout_remove", hashed, purpose)
        self._set_optouts(self._optouts - {(hashed, purpose)})
        log.info("compliance: opt-out of %s from %s removed", phone.mask(e164), purpose)
        return removed

    async def optouts_of(self, number: str) -> list[tuple[str, float, str]]:
        return await self._repo.optouts_of(self._resolve(number)[1])

    async def _admin(self, now: float, actor: str, action: str, hashed: str, purpose: str) -> None:
        detail = json.dumps({"purpose": purpose}, sort_keys=True)
        await self._repo.add_admin(now, actor, action, f"callee {hashed}", detail)

    async def on_user_event(self, event: Mapping[str, str]) -> bool:
        """AMI ``UserEvent(OptOut,Number: ...,Purpose: survey)`` from the IVR ("press 8").

        Returns True when an opt-out was stored. Bad fields are logged (masked) and dropped;
        the event's Uniqueid makes it count once when several agents receive it."""
        if event.get("UserEvent") != OPTOUT_USEREVENT:
            return False
        number = event.get("Number", "").strip()
        purpose = event.get("Purpose", "").strip()
        try:
            return await self.add_optout(
                number, purpose, "ivr", event_id=event.get("Uniqueid") or None
            )
        except BadRequest as exc:
            log.warning("compliance: OptOut event for %s ignored: %s", phone.mask(number), exc)
            return False

    # -- retention -------------------------------------------------------------------------
    async def purge(self, *, dry_run: bool, actor: str | None = None) -> list[PurgePlan]:
        """Delete call metadata past its retention ([retention] in pools.toml); with
        ``dry_run`` only count. Each table's owner deletes its rows (retention.py); purged
        audit rows are recorded in the chain."""
        now = self._clock.now()
        plans = await self._retention.sweep(self._config, now, dry_run=dry_run)
        if not dry_run and actor is not None:
            detail = json.dumps({p.table: p.rows for p in plans}, sort_keys=True)
            await self._repo.add_admin(now, actor, "audit_purge", "retention", detail)
        return plans
