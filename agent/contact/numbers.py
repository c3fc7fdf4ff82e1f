"""Which numbers may be imported into a pool: pure checks, no I/O.

Rules, in order: a possible and valid number (phonenumbers), a number type a patient can call
back at a normal price (no premium rate, shared cost, pager, ...), the French numbering plan
(ARCEP decision 2022-1583: mobile 06/07 numbers are reserved for interpersonal use and must
not be presented by automated calling systems; 0162, 0163, 0270, 0271, 0377, 0378, 0424,
0425, 0568, 0569, 0948, 0949 and overseas 09475-09479 are the ranges reserved for automated
calling systems, which phones and blocking apps label as canvassing), then duplicates (a
number already in any pool, or repeated in the file).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

from agent import phone
from agent.contact.cnam import cnam_problem

# National significant number prefixes ARCEP reserves for automated calling systems (SAA).
ARCEP_SAA_PREFIXES = (
    "162", "163", "270", "271", "377", "378", "424", "425", "568", "569", "948", "949",
    "9475", "9476", "9477", "9478", "9479",
)  # fmt: skip
ARCEP_MOBILE = (
    "mobile 06/07 numbers are reserved by ARCEP (decision 2022-1583) for person-to-person "
    "use and must not be presented as caller ID by automated calling systems"
)
ARCEP_SAA = (
    "range reserved by ARCEP (decision 2022-1583) for automated calling systems: phones and "
    "blocking apps label it as canvassing, patients would not answer a clinic from it"
)
_REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "premium-rate number: a patient calling back pays a surcharge",
    PhoneNumberType.SHARED_COST: "shared-cost number: a patient calling back pays a surcharge",
    PhoneNumberType.PAGER: "pager number: cannot be called back",
    PhoneNumberType.UAN: "universal access number: not a caller ID",
    PhoneNumberType.PERSONAL_NUMBER: "personal number: not a caller ID",
    PhoneNumberType.UNKNOWN: "number type unknown to the numbering plan",
}


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int  # in the CSV file (the header is line 1)
    number: str
    name: str


@dataclass(frozen=True, slots=True)
class Verdict:
    line: int
    number: str  # as written in the file
    e164: str | None
    name: str
    outcome: str  # added | duplicate | rejected
    reason: str = ""


def number_problem(e164_or_text: str, region: str) -> tuple[str | None, str | None]:
    """(E.164, None) when the number may be a caller ID, else (E.164 or None, the reason)."""
    try:
        parsed = phone.parse(e164_or_text, region)
    except phone.InvalidNumber as exc:
        return None, f"not a phone number ({exc})"
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    national = phonenumbers.national_significant_number(parsed)
    if parsed.country_code == 33:
        # The whole 06/07 block, allocated yet or not: the rule is about the block.
        if national[:1] in ("6", "7"):
            return e164, ARCEP_MOBILE
        if national.startswith(ARCEP_SAA_PREFIXES):
            return e164, ARCEP_SAA
    if not phonenumbers.is_valid_number(parsed):
        return e164, "not a valid number in its country's numbering plan"
    kind = phonenumbers.number_type(parsed)
    if kind in _REFUSED_TYPES:
        return e164, _REFUSED_TYPES[kind]
    return e164, None


def check_rows(
    rows: Iterable[ImportRow],
    *,
    region: str,
    existing: Mapping[str, str],
    default_name: str | None,
) -> Iterator[Verdict]:
    """One verdict per row, lazily (so a progress bar can follow). ``existing`` maps every
    number already in pools.toml (E.164) to where it is, e.g. ``pools.reminders``."""
    seen: dict[str, int] = {}
    for row in rows:
        e164, problem = number_problem(row.number, region)
        name = row.name.strip() or (default_name or "")
        if problem is None:
            if not name:
                problem = "no name: add a name column (the pool has no number to copy it from)"
            else:
                problem = cnam_problem(name)
        if problem is not None:
            yield Verdict(row.line, row.number, e164, name, "rejected", problem)
            continue
        assert e164 is not None
        if e164 in existing:
            yield Verdict(row.line, row.number, e164, name, "duplicate", f"in {existing[e164]}")
        elif e164 in seen:
            yield Verdict(
                row.line, row.number, e164, name, "duplicate", f"repeats line {seen[e164]}"
            )
        else:
            seen[e164] = row.line
            yield Verdict(row.line, row.number, e164, name, "added")
