"""Compliance rules as pure functions: call windows, public holidays, attempt limits, opt-outs.

May: parse window texts, read phonenumbers' time-zone data and the ``holidays`` calendars
(both are in-memory data, no I/O), compute a verdict for a given instant. Must not: read the
clock, touch the store or log. The caller passes ``now`` (UTC epoch seconds), the number of
attempts already made and whether the callee opted out.

Window text: clauses separated by ``;``, each ``<days> <HH:MM-HH:MM> [<HH:MM-HH:MM> ...]``.
Days are ``Mon``..``Sun``, ranges (``Mon-Fri``, ``Mon-Sun``, ``Fri-Mon`` wraps) and lists
(``Mon,Wed,Fri``). ``24:00`` ends a day; an interval never crosses midnight.

The callee's time zone comes from phonenumbers. When it names several zones for a number
(``+262 692...`` gives Mayotte and Réunion), the one kept is the zone its region's example
fixed-line number has (Réunion for RE, Tahiti for PF, New York for US), else the first in
alphabetical order; a number phonenumbers cannot place gets the fallback zone (the pool's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as pn_timezone

if TYPE_CHECKING:
    from holidays import HolidayBase

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TIME = re.compile(r"(\d{2}):(\d{2})")
# How far ahead the next window is looked for (a weekly window with a holiday fits easily).
HORIZON_DAYS = 31

ALLOWED = "allowed"
OUTSIDE_WINDOW = "outside_window"
ATTEMPTS_EXCEEDED = "attempts_exceeded"
OPTED_OUT = "opted_out"


class WindowError(ValueError):
    """A window or calendar text is malformed; the message names the bad token."""


@dataclass(frozen=True, slots=True)
class Window:
    text: str
    # Per weekday (Mon=0): (start, end) minutes after local midnight, sorted, end <= 1440.
    days: tuple[tuple[tuple[int, int], ...], ...]


@dataclass(frozen=True, slots=True)
class Limit:
    attempts: int
    days: int

    @property
    def seconds(self) -> float:
        return self.days * 86400.0


@dataclass(frozen=True, slots=True)
class PurposeRules:
    window: Window | None = None
    calendar: str | None = None  # "FR", "FR-974": public holidays are outside the window
    limit: Limit | None = None

    @property
    def unrestricted(self) -> bool:
        return self.window is None and self.calendar is None and self.limit is None


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # allowed | outside_window | attempts_exceeded | opted_out
    reason: str  # TRUSTLINE_REASON: window | holiday | attempt_limit | opted_out | *_unknown
    zone: str  # the callee's time zone used
    next_window: str | None = None  # ISO 8601 in the callee's zone, for outside_window
    detail: str = ""  # the rule in words, for explain-call

    @property
    def allowed(self) -> bool:
        return self.status == ALLOWED


# -- parsing --------------------------------------------------------------------------------
def _minutes(token: str, clause: str) -> int:
    m = _TIME.fullmatch(token)
    if not m:
        raise WindowError(f"bad time {token!r} in {clause!r} (use HH:MM)")
    hours, minutes = int(m[1]), int(m[2])
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise WindowError(f"bad time {token!r} in {clause!r} (00:00 to 24:00)")
    return hours * 60 + minutes


def _day(token: str, clause: str) -> int:
    if token not in DAYS:
        raise WindowError(f"unknown day {token!r} in {clause!r} (use {', '.join(DAYS)})")
    return DAYS.index(token)


def _days(spec: str, clause: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        first, dash, last = part.partition("-")
        if not dash:
            out.append(_day(first, clause))
            continue
        a, b = _day(first, clause), _day(last, clause)
        out += [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    return out


def parse_window(text: str) -> Window:
    """Parse ``"Mon-Fri 09:00-19:00; Sat 09:00-12:00"``. Raises WindowError naming the token."""
    per_day: list[list[tuple[int, int]]] = [[] for _ in DAYS]
    clauses = [c.strip() for c in text.split(";")]
    if not any(clauses):
        raise WindowError("empty window (e.g. 'Mon-Fri 09:00-19:00')")
    for clause in clauses:
        if not clause:
            raise WindowError(f"empty clause in {text!r} (a stray ';')")
        tokens = clause.split()
        if len(tokens) < 2:
            raise WindowError(f"{clause!r} needs days and hours (e.g. 'Mon-Fri 09:00-19:00')")
        days = _days(tokens[0], clause)
        for token in tokens[1:]:
            start_text, dash, end_text = token.partition("-")
            if not dash:
                raise WindowError(f"bad hours {token!r} in {clause!r} (use HH:MM-HH:MM)")
            start, end = _minutes(start_text, clause), _minutes(end_text, clause)
            if start >= end:
                raise WindowError(f"hours {token!r} in {clause!r} end before they start")
            for day in days:
                per_day[day].append((start, end))
    return Window(text, tuple(tuple(sorted(d)) for d in per_day))


@lru_cache(maxsize=64)
def _calendar(name: str) -> HolidayBase:
    # Imported with the first calendar named: ~0.2 s and ~4 MB an agent without one never pays.
    import holidays

    country, _, subdiv = name.partition("-")
    try:
        return holidays.country_holidays(country, subdiv=subdiv or None)
    except NotImplementedError:
        raise WindowError(f"unknown holiday calendar {name!r} (e.g. 'FR', 'FR-974')") from None


def check_calendar(name: str) -> str:
    """Validate a calendar name (``FR``, ``FR-974`` for La Réunion...). Raises WindowError."""
    _calendar(name)
    return name


@lru_cache(maxsize=4096)
def holiday(calendar: str, day: date) -> str | None:
    """The name of the public holiday on ``day`` in ``calendar``, or None (kept per calendar
    and day: a calendar never changes while the agent runs)."""
    name = _calendar(calendar).get(day)
    return str(name) if name else None


# -- the callee's time zone -----------------------------------------------------------------
@lru_cache(maxsize=512)
def _main_zones(region: str) -> frozenset[str]:
    example = phonenumbers.example_number_for_type(region, PhoneNumberType.FIXED_LINE)
    return frozenset(pn_timezone.time_zones_for_number(example)) if example else frozenset()


def zone_of(num: phonenumbers.PhoneNumber) -> str | None:
    """The IANA zone of a parsed number (see the module docstring for the rule when several),
    or None when phonenumbers cannot place it (an invalid or unknown number)."""
    zones = [z for z in pn_timezone.time_zones_for_number(num) if z != "Etc/Unknown"]
    if len(zones) > 1:
        region = phonenumbers.region_code_for_number(num)
        main = _main_zones(region) if region else frozenset()
        zones = sorted(set(zones) & main) or sorted(zones)
    for zone in zones:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return zone
    return None


def callee_zone(e164: str, fallback: str) -> str:
    """The IANA zone of an E.164 number, else ``fallback``."""
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return fallback
    return zone_of(num) or fallback


# -- windows --------------------------------------------------------------------------------
def _local(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone) + timedelta(minutes=minutes)


@dataclass(frozen=True, slots=True)
class WindowState:
    """Where an instant stands in a window, and for how long that answer holds: the same for
    every instant from ``at`` until (not including) ``until``, the next start or end of an
    interval or the callee's next midnight, whichever comes first (a cache may keep it so)."""

    inside: bool
    why: str  # starts with ``holiday`` when today is a public holiday in the calendar
    next_window: str | None  # ISO 8601 start of the next allowed interval, when outside
    at: float
    until: float


def window_state(
    window: Window | None, calendar: str | None, zone: ZoneInfo, now: float
) -> WindowState:
    """Is ``now`` inside the window (in ``zone``'s wall clock, public holidays of ``calendar``
    excluded), and if not, why and when the next allowed interval starts."""
    local_now = datetime.fromtimestamp(now, zone)
    today = local_now.date()
    # The answer names today (a holiday's name, the day's intervals): it holds until midnight.
    midnight = _local(today + timedelta(days=1), 0, zone).timestamp()
    why = ""
    for offset in range(HORIZON_DAYS + 1):
        day = today + timedelta(days=offset)
        name = holiday(calendar, day) if calendar else None
        if name:
            if offset == 0:
                why = f"holiday {calendar}: {name} ({day.isoformat()})"
            continue
        intervals = window.days[day.weekday()] if window else ((0, 1440),)
        for start, end in intervals:
            # Wall-clock minutes; fromtimestamp/timestamp settle DST gaps and folds.
            end_at = _local(day, end, zone).timestamp()
            if end_at <= now:
                continue
            start_at = _local(day, start, zone)
            begins = start_at.timestamp()
            if begins <= now:
                return WindowState(True, "", None, now, end_at)
            why = why or f"outside {window.text if window else 'the window'}"
            return WindowState(False, why, start_at.isoformat(), now, min(begins, midnight))
    return WindowState(False, why or "no window in the next month", None, now, midnight)


def optouts_unknown(zone: str, now: float, retry_seconds: float = 60.0) -> Verdict:
    """A call to a patient while the opt-out set has never been read (the store is down at
    start and there is no local copy): it does not go out; the dialer tries again shortly."""
    return _held_back(
        "optouts_unknown", "the opt-out list has not been read from the store yet",
        zone, now, retry_seconds,
    )  # fmt: skip


def attempts_unknown(zone: str, now: float, retry_seconds: float = 60.0) -> Verdict:
    """A call under an attempt limit to a callee who may have been called in the period, while
    the store cannot count those calls (down, or slower than the deadline): it does not go
    out; the dialer tries again shortly."""
    return _held_back(
        "attempts_unknown", "the store could not count this callee's earlier attempts",
        zone, now, retry_seconds,
    )  # fmt: skip


def _held_back(reason: str, detail: str, zone: str, now: float, retry_seconds: float) -> Verdict:
    later = datetime.fromtimestamp(now + retry_seconds, ZoneInfo(zone)).replace(microsecond=0)
    return Verdict(OUTSIDE_WINDOW, reason, zone, later.isoformat(), detail)


@lru_cache(maxsize=1024)
def _allowed(zone: str) -> Verdict:
    """The verdict most calls get (immutable: one per zone will do)."""
    return Verdict(ALLOWED, "", zone)


def decide(
    rules: PurposeRules,
    *,
    now: float,
    zone: str,
    opted_out: bool,
    attempts: int,
    state: WindowState | None = None,
) -> Verdict:
    """May this call go out now? Opt-out first, then the attempt limit, then the window.

    ``state``: the window's state for these rules and ``zone`` as computed earlier, used when
    it still holds at ``now`` (window_state otherwise)."""
    if opted_out:
        return Verdict(OPTED_OUT, "opted_out", zone, detail="the callee opted out of this purpose")
    limit = rules.limit
    if limit is not None and attempts >= limit.attempts:
        return Verdict(
            ATTEMPTS_EXCEEDED,
            "attempt_limit",
            zone,
            detail=f"{attempts} attempts in the last {limit.days} days (limit {limit.attempts})",
        )
    if rules.window is None and rules.calendar is None:
        return _allowed(zone)
    if state is None or not state.at <= now < state.until:
        state = window_state(rules.window, rules.calendar, ZoneInfo(zone), now)
    if state.inside:
        return _allowed(zone)
    why = state.why
    reason = "holiday" if why.startswith("holiday") else "window"
    return Verdict(OUTSIDE_WINDOW, reason, zone, state.next_window, why)
