"""CNAM rules: what carrier caller-name databases accept, and when a change is allowed.

Pure: no I/O, no clock reads. Carriers keep 15 characters of plain ASCII; a name with accents
or other letters is mangled (``Clinique H?l?ne``), so the config check refuses it and suggests
the closest ASCII spelling. A provisioned name changes at most once per 7 days and takes up
to 72 h to reach every carrier database.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

CNAM_MAX = 15
CHANGE_EVERY_DAYS = 7
PROPAGATION_HOURS = 72
_PRINTABLE_ASCII = frozenset(chr(c) for c in range(0x20, 0x7F))


def ascii_suggestion(name: str) -> str:
    """The closest plain-ASCII spelling: accents dropped (é -> e), ligatures spelled out
    (œ -> oe), anything else removed; cut to 15 characters."""
    spelled = name.replace("œ", "oe").replace("Œ", "OE").replace("æ", "ae").replace("Æ", "AE")
    spelled = spelled.replace("ß", "ss")
    decomposed = unicodedata.normalize("NFKD", spelled)
    kept = "".join(ch for ch in decomposed if ch in _PRINTABLE_ASCII)
    return " ".join(kept.split())[:CNAM_MAX]


def cnam_problem(name: str) -> str | None:
    """Why carriers would not show ``name`` as written, with a suggestion; None when fine.

    agent/config_schema.py calls this once per distinct caller name in pools.toml."""
    odd = sorted({ch for ch in name if ch not in _PRINTABLE_ASCII})
    if odd:
        return (
            f"caller name {name!r} has characters carrier databases mangle "
            f"({' '.join(odd)}); CNAM is plain ASCII: use {ascii_suggestion(name)!r}"
        )
    if len(name) > CNAM_MAX:
        return f"caller name is {len(name)} characters; CNAM allows at most {CNAM_MAX}"
    return None


@dataclass(frozen=True, slots=True)
class CnamState:
    number: str  # E.164
    wanted: str  # from pools.toml
    provisioned: str | None  # at the carrier, as an admin recorded it
    provisioned_on: float | None  # when it was provisioned (epoch seconds)


@dataclass(frozen=True, slots=True)
class CnamStatus:
    number: str
    wanted: str
    provisioned: str | None
    state: str  # ok | pending | mismatch | never_provisioned
    detail: str


def status(st: CnamState, now: float) -> CnamStatus:
    """Where a number's caller name stands: shown everywhere (ok), still propagating (pending),
    different from what pools.toml wants (mismatch, with the first day a change is allowed)."""
    if st.provisioned is None or st.provisioned_on is None:
        return CnamStatus(
            st.number, st.wanted, None, "never_provisioned", "ask the carrier to provision it"
        )
    age_h = (now - st.provisioned_on) / 3600.0
    if st.provisioned != st.wanted:
        allowed_at = st.provisioned_on + CHANGE_EVERY_DAYS * 86400.0
        if now < allowed_at:
            days = (allowed_at - now) / 86400.0
            when = f"a change is allowed in {days:.1f} days (one change per {CHANGE_EVERY_DAYS})"
        else:
            when = "a change is allowed now"
        return CnamStatus(st.number, st.wanted, st.provisioned, "mismatch", when)
    if age_h < PROPAGATION_HOURS:
        left = PROPAGATION_HOURS - age_h
        return CnamStatus(
            st.number,
            st.wanted,
            st.provisioned,
            "pending",
            f"may take {left:.0f} more hours to reach every carrier database",
        )
    return CnamStatus(st.number, st.wanted, st.provisioned, "ok", "")


def change_refused(previous_on: float | None, new_on: float, name_changed: bool) -> str | None:
    """Why recording a new provisioned name on ``new_on`` breaks the 7-day rule (else None)."""
    if previous_on is None or not name_changed:
        return None
    days = (new_on - previous_on) / 86400.0
    if 0 <= days < CHANGE_EVERY_DAYS:
        return (
            f"the name was changed {days:.1f} days before; carriers allow one change per "
            f"{CHANGE_EVERY_DAYS} days"
        )
    return None
