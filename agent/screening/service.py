"""The screening use case: gather the facts of one inbound call, score it, keep the decision.

May: read the current config (through ``config_provider``, never cached past a swap), keep
burst/flood windows and a copy of recently called numbers (hashes) in memory, read and write
its tables through ``ScreeningRepo``. Must not: hold plain caller numbers anywhere but in the
call being screened, log them unmasked, or make the dialplan wait on writing the decision.
When the store fails after start-up, screening goes on with the lists and callbacks it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent import phone
from agent.clock import Clock
from agent.config import Config
from agent.errors import BadRequest, StoreError
from agent.screening import rules
from agent.screening.callees import RecentCallees
from agent.screening.callers import Caller
from agent.screening.config import ScreeningConfig
from agent.screening.lists import ListMatcher, normalise_entry
from agent.screening.repo import LIST_KINDS, DecisionRow, ListEntry, ScreeningRepo
from agent.screening.windows import BurstCounter, FloodCounter
from agent.store import Database

log = logging.getLogger(__name__)

# How often a running agent checks whether another process (the CLI) changed the lists: in
# the background under traffic; a call after a quiet spell waits for the read.
LISTS_REFRESH_SECONDS = 2.0
LISTS_WAIT_SECONDS = 10.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class InboundCall:
    caller: str  # the channel's caller number as Asterisk sent it ("" when none)
    dialled: str
    attestation: str = ""  # A/B/C, verstat or verify_result text from the dialplan
    callingpres: int = 0
    uniqueid: str = ""
    # STIR_SHAKEN(0,verify_result) as a separate argument; "" when the dialplan passes none.
    verify_result: str = ""


@dataclass(frozen=True, slots=True)
class _ConfigView:
    """What screening derives from one config object; rebuilt when the config is swapped."""

    config: Config
    screening: ScreeningConfig
    default_region: str
    own_numbers: frozenset[str]


class ScreeningService:
    def __init__(
        self,
        *,
        config_provider: Callable[[], Config],
        db: Database,
        clock: Clock,
        hash_key: bytes,
    ) -> None:
        self._config_provider = config_provider
        self._repo = ScreeningRepo(db)
        self._clock = clock
        self._hash_key = hash_key
        self._bursts = BurstCounter()
        self._floods = FloodCounter()
        self._anonymous = itertools.count()
        self._view: _ConfigView | None = None
        # Lists from the store, merged with the config's static entries.
        self._stored: dict[str, tuple[str, ...]] | None = None
        self._lists_version = -1
        self._lists_checked_at = float("-inf")
        self._lists_lock = asyncio.Lock()
        self._lists_task: asyncio.Task[None] | None = None
        self._matchers: tuple[ListMatcher, ListMatcher] | None = None  # (allow, block)
        self._matchers_for: tuple[object, object] | None = None
        self._callees = RecentCallees(self._repo)
        self._pending: list[DecisionRow] = []
        # Callees told by SMS to expect our call (agent.contact's pins): a callback too. In
        # memory, no I/O; set by app.py.
        self.also_called: Callable[[str, float], bool] | None = None
        self._flush_task: asyncio.Task[None] | None = None

    # -- the use case -----------------------------------------------------------------------

    async def screen(self, call: InboundCall) -> rules.Decision:
        """Live decision: counts the call in the windows and stores the decision."""
        decision, row = await self._decide(call, live=True)
        assert row is not None
        self._pending.append(row)
        if self._flush_task is None or self._flush_task.done():
            # Group commit: decisions that arrive while a batch is being written go in the next.
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
        if log.isEnabledFor(logging.DEBUG):  # masking costs time on every call otherwise
            log.debug(
                "screen %s caller=%s verdict=%s score=%d reasons=%s",
                call.uniqueid or "-",
                phone.mask(call.caller),
                decision.verdict,
                decision.score,
                decision.reasons_text,
            )
        return decision

    async def explain(self, call: InboundCall) -> rules.Decision:
        """Dry run for the CLI: same rules, no window counting, nothing stored."""
        decision, _ = await self._decide(call, live=False)
        return decision

    async def _decide(
        self, call: InboundCall, *, live: bool
    ) -> tuple[rules.Decision, DecisionRow | None]:
        view = self._current_view()
        cfg = view.screening
        now = self._clock.now()
        line = rules.read_dialled(call.dialled, view.default_region, view.own_numbers)
        caller = rules.classify_caller(call.caller, call.callingpres, line.region)
        attestation = rules.combine_verify_result(
            rules.parse_attestation(call.attestation), call.verify_result
        )
        caller_hash = (
            phone.keyed_hash(self._hash_key, caller.hash_source) if caller.hash_source else None
        )
        allow, block = await self._lists(view, now)
        allowlisted = allow.match(caller.e164)
        line_key = line.e164 or call.dialled[:32]
        burst_calls = flood_callers = None
        if live:
            # Every call counts in the windows, allow-listed ones too: they are load on the line.
            if caller_hash is not None:
                burst_calls = self._bursts.record(caller_hash, now, cfg.windows.burst_seconds)
            flood_key = caller_hash or f"anonymous:{next(self._anonymous)}"
            flood_callers = self._floods.record(line_key, flood_key, now, cfg.windows.flood_seconds)
        if allowlisted is not None or not cfg.enabled:
            facts = rules.CallFacts(
                caller=caller, line=line, attestation=attestation, allowlisted=allowlisted
            )
            decision = rules.evaluate(facts, cfg, explain=not live)
        else:
            callback = await self._callback(caller, caller_hash, cfg, now)
            facts = rules.CallFacts(
                caller=caller,
                line=line,
                attestation=attestation,
                blocklisted=block.match(caller.e164),
                own_number=caller.e164 in view.own_numbers if caller.e164 else False,
                burst_calls=burst_calls,
                flood_callers=flood_callers,
                callback=callback,
            )
            decision = rules.evaluate(facts, cfg, explain=not live)
        if not live:
            return decision, None
        row = DecisionRow(
            at=now,
            uniqueid=call.uniqueid,
            # Our own line is not personal data; anything else the dialplan passed may be.
            dialled=line.e164 if line.e164 in view.own_numbers else phone.mask(call.dialled),
            caller_hash=caller_hash,
            caller_masked=phone.mask(call.caller),
            attestation=attestation.value,
            score=decision.score,
            verdict=decision.verdict,
            reasons=decision.reasons_text,
        )
        return decision, row

    async def _callback(
        self, caller: Caller, caller_hash: str | None, cfg: ScreeningConfig, now: float
    ) -> bool | None:
        """Did we call this caller lately (or announce a call to them)? None: not asked."""
        if not (caller.e164 and cfg.callback_days > 0 and cfg.weights.callback != 0):
            return None
        # caller_hash is the HMAC of caller.e164 here: the key call_audit uses.
        assert caller_hash is not None and caller.hash_source == caller.e164
        since = now - cfg.callback_days * DAY
        callback = await self._callees.called_since(caller_hash, since, now)
        if not callback and self.also_called is not None:
            callback = self.also_called(caller_hash, since)  # announced, not yet called
        return callback

    # -- config and lists -------------------------------------------------------------------

    def _current_view(self) -> _ConfigView:
        config = self._config_provider()
        view = self._view
        if view is None or view.config is not config:
            screening = config.raw.screening
            own = set(config.numbers)
            own.update(p.fallback for p in config.pools.values() if p.fallback)
            own.update(screening.own_numbers)
            view = self._view = _ConfigView(
                config=config,
                screening=screening,
                default_region=screening.default_region or config.default_region,
                own_numbers=frozenset(own),
            )
        return view

    async def _lists(self, view: _ConfigView, now: float) -> tuple[ListMatcher, ListMatcher]:
        age = now - self._lists_checked_at
        refreshing = self._lists_lock.locked() or not (
            self._lists_task is None or self._lists_task.done()
        )
        if self._stored is None:
            async with self._lists_lock:  # one reader at a time
                if self._stored is None:
                    await self._reload_lists(now)  # nothing to screen with until this works
        elif age >= LISTS_WAIT_SECONDS and not refreshing:
            # After a quiet spell, this call waits for a fresh read.
            async with self._lists_lock:
                await self._refresh_lists(now)
        elif age >= LISTS_REFRESH_SECONDS and not refreshing:
            # Under traffic, refresh behind the calls: none of them waits on the store.
            self._lists_task = asyncio.get_running_loop().create_task(
                self._refresh_in_background(now)
            )
        stamp = (view.screening, self._stored)
        if (
            self._matchers is None
            or self._matchers_for is None
            or any(a is not b for a, b in zip(self._matchers_for, stamp, strict=True))
        ):
            assert self._stored is not None
            self._matchers = (
                ListMatcher.of((*view.screening.allow, *self._stored["allow"])),
                ListMatcher.of((*view.screening.block, *self._stored["block"])),
            )
            self._matchers_for = stamp
        return self._matchers

    async def _refresh_in_background(self, now: float) -> None:
        async with self._lists_lock:
            await self._refresh_lists(now)

    async def _refresh_lists(self, now: float) -> None:
        try:
            await self._reload_lists(now)
        except Exception as exc:  # the store is down: keep the lists we have
            self._lists_checked_at = now  # and do not ask again on every call
            log.warning("screening: lists not refreshed (%s); using the last ones", exc)

    async def _reload_lists(self, now: float) -> None:
        self._lists_checked_at = now
        version = await self._repo.lists_version()
        if self._stored is None or version != self._lists_version:
            entries = await self._repo.list_entries()
            self._stored = {
                kind: tuple(e.entry for e in entries if e.kind == kind) for kind in LIST_KINDS
            }
            self._lists_version = version
            self._matchers = None

    def normalise(self, text: str) -> str:
        """A list entry as stored; national forms are read in the configured region."""
        view = self._current_view()
        try:
            return normalise_entry(text, view.default_region)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None

    async def add_entry(self, kind: str, text: str, note: str = "") -> tuple[str, bool]:
        """Normalise and add; returns the stored entry and whether it is new."""
        entry = self.normalise(text)
        added = await self._repo.add_entry(_kind(kind), entry, self._clock.now(), note)
        self._stored = None  # our own change is visible at once
        log.info("screening: %s list %s %s", kind, "added" if added else "kept", _show(entry))
        return entry, added

    async def remove_entry(self, kind: str, text: str) -> tuple[str, bool]:
        entry = self.normalise(text)
        removed = await self._repo.remove_entry(_kind(kind), entry)
        self._stored = None
        log.info("screening: %s list %s %s", kind, "removed" if removed else "lacked", _show(entry))
        return entry, removed

    async def entries(self, kind: str | None = None) -> list[ListEntry]:
        return await self._repo.list_entries(_kind(kind) if kind else None)

    def static_entries(self, kind: str) -> tuple[str, ...]:
        """Entries from pools.toml (not removable from the CLI)."""
        cfg = self._current_view().screening
        return cfg.allow if _kind(kind) == "allow" else cfg.block

    # -- decisions out ----------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._repo.record_decisions(batch)
            except Exception as exc:  # a background task: nobody else would see it
                # The verdicts were already given; only their audit rows are lost.
                log.warning("screening: could not store %d decisions: %s", len(batch), exc)

    async def flush(self) -> None:
        """Wait until every decision given so far is stored."""
        while self._flush_task is not None and not self._flush_task.done():
            await asyncio.shield(self._flush_task)
        if self._pending:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_loop())
            await self._flush_task

    async def close(self) -> None:
        """Store what is pending; call before closing the database."""
        await self._callees.close()
        if self._lists_task is not None and not self._lists_task.done():
            with contextlib.suppress(Exception):
                await self._lists_task
        with contextlib.suppress(StoreError):
            await self.flush()

    @property
    def tracked(self) -> tuple[int, int, int]:
        """Sizes kept in memory, for metrics: callers in burst windows, caller/line pairs in
        flood windows, recently called numbers (hashes)."""
        return len(self._bursts), len(self._floods), len(self._callees)


def _kind(kind: str) -> str:
    if kind not in LIST_KINDS:
        raise BadRequest(f"unknown list {kind!r} (use allow or block)")
    return kind


def _show(entry: str) -> str:
    # Prefixes are not personal data; exact numbers are masked like any number in logs.
    return entry if entry.endswith("*") else phone.mask(entry)
