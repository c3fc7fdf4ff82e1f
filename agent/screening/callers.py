"""Who is calling, on which line: the attestation, the caller ID and the dialled number read
into facts the screening rules score.

Pure: no I/O, no clock, no logging, no store. Reads numbers only through phonenumbers (via
agent.phone); never keeps a full number beyond the call (the caches hold parsed results).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any, NamedTuple

import phonenumbers
from phonenumbers import PhoneNumberType

from agent import phone


class Attestation(StrEnum):
    A = "a"
    B = "b"
    C = "c"
    PASSED = "passed"  # verified, no level given
    FAILED = "failed"
    MISSING = "missing"

    @property
    def reason(self) -> str:
        return f"stir_{self.value}"


# Asterisk's STIR_SHAKEN(0,verify_result) values (res_stir_shaken, 18-22) and the carrier
# verstat values, lower-cased. Anything unknown is "missing": no signal, not a pass.
_PASSED = frozenset({"success", "verification passed", "verification successful"})
_MISSING = frozenset(
    {
        "",
        "no-tn-validation",
        "verification not present",
        "missing_identity_hdr",
        "disabled",
        # Our PBX's own trouble says nothing about the caller.
        "internal_error",
        "invalid_arguments",
        "cert_cache_miss",
    }
)
_VERSTAT = re.compile(r"verstat=([A-Za-z0-9-]+)", re.IGNORECASE)


def parse_attestation(text: str) -> Attestation:
    """Attestation from the dialplan argument: ``A``/``B``/``C``, a verstat, a verify_result.

    Accepts a bare value (``TN-Validation-Passed-B``), ``verstat=...`` or a whole From/PAI URI.
    """
    return _parse_attestation(text[:512])


@lru_cache(maxsize=256)
def _parse_attestation(text: str) -> Attestation:
    value = text.strip()
    found = _VERSTAT.findall(value)
    if found:
        # The LAST one: in a whole From/PAI the carrier's URI parameter comes after the user
        # part and display name, which the caller chooses.
        value = found[-1]
    low = value.lower()
    if low in ("a", "b", "c"):
        return Attestation(low)
    if low.startswith("tn-validation-passed"):
        level = low.removeprefix("tn-validation-passed").lstrip("-")
        return Attestation(level) if level in ("a", "b", "c") else Attestation.PASSED
    if low.startswith("tn-validation-failed"):
        return Attestation.FAILED
    if low in _PASSED:
        return Attestation.PASSED
    if low in _MISSING:
        return Attestation.MISSING
    if (
        "fail" in low
        or "mismatch" in low
        or low.startswith(("invalid", "cert_", "missing_"))
        or (low.endswith(("_error", "_failure", "_expired")))
    ):
        return Attestation.FAILED
    if low in ("signature_validation", "no_raw_key"):
        return Attestation.FAILED
    return Attestation.MISSING


def combine_verify_result(attestation: Attestation, verify_result: str) -> Attestation:
    """The attestation as far as the PBX's own verification lets us believe it.

    ``STIR_SHAKEN(0,attestation)`` is the PASSporT's claim, filled in even when the signature
    did not verify: A/B/C count only when ``verify_result`` is a pass or absent (the 2-argument
    dialplan). A failed or mismatched verification is ``failed``; any other result (PBX
    trouble, verification disabled) is no signal: ``missing``.
    """
    if not verify_result.strip():
        return attestation
    result = parse_attestation(verify_result)
    if result is Attestation.FAILED:
        return Attestation.FAILED
    if result is Attestation.PASSED:
        return attestation if attestation is not Attestation.MISSING else Attestation.PASSED
    return Attestation.MISSING if attestation is not Attestation.FAILED else attestation


# ---------------------------------------------------------------------------------------------
# The caller


# Text some networks and PBXes put in the caller number when there is none to show.
_WITHHELD_TEXT = frozenset(
    {"", "anonymous", "unknown", "restricted", "private", "withheld", "unavailable", "blocked"}
)
# Asterisk AST_PRES_*: bits 0x60 are the presentation; 0x20 restricted, 0x40 unavailable.
_PRES_MASK = 0x60
_PRES_RESTRICTED = 0x20
_PRES_UNAVAILABLE = 0x40


class NumberStatus(StrEnum):
    ABSENT = "absent"  # no number at all
    IMPOSSIBLE = "impossible"  # not even a possible number
    INVALID = "invalid"  # possible length, but no such number in the plan
    VALID = "valid"


class Caller(NamedTuple):
    """What the caller ID says, without the plain number leaving the service.

    Plain values only (status is a NumberStatus value): the classification cache keeps these
    as exact tuples, which the garbage collector does not walk (see _classify_cached).
    """

    status: str  # a NumberStatus value
    withheld: bool
    e164: str | None  # set for possible numbers (valid or not)
    region: str | None  # ISO region of a valid number
    number_type: int | None  # phonenumbers.PhoneNumberType of a valid number
    hash_source: str  # what the keyed hash is computed over (E.164, else the text), ASCII


def is_withheld_presentation(callingpres: int) -> bool:
    return callingpres & _PRES_MASK in (_PRES_RESTRICTED, _PRES_UNAVAILABLE)


# Longer caller IDs are not numbers; they are read but never cached (strangers choose them).
_CACHEABLE = 32


def classify_caller(raw: str, callingpres: int, region: str) -> Caller:
    """Read the caller ID as a number of ``region`` (the dialled line's), or international.

    Carriers often send international numbers without ``+``/``00`` (``33612345678``): when the
    national reading is not valid, the international reading is tried too.
    """
    if len(raw) <= _CACHEABLE:
        return Caller._make(_classify_cached(raw, callingpres, region))
    return _classify(raw, callingpres, region)


def _classify(raw: str, callingpres: int, region: str) -> Caller:
    text = raw.strip()
    if text.lower() in _WITHHELD_TEXT:
        return Caller(NumberStatus.ABSENT.value, True, None, None, None, "")
    withheld = is_withheld_presentation(callingpres)
    readings = [text]
    if text.isdigit() and not text.startswith("0"):
        # A valid international reading comes first: carriers send "4915112345678" for
        # +49 151..., which a variable-length plan (DE, IT, AT) also reads as a valid national
        # number (+49 4915...), and the wrong E.164 would miss own numbers, lists and callbacks.
        # National numbers without a trunk prefix (NANP, IT mobiles) are not valid read with a
        # '+', so they still fall through to the national reading.
        readings.insert(0, "+" + text)
    possible: phonenumbers.PhoneNumber | None = None
    possible_rank = 2
    for reading in readings:
        try:
            num = phone.parse(reading, region)
        except phone.InvalidNumber:
            continue
        # number_type is UNKNOWN exactly when is_valid_number is False; asking once instead
        # of both halves the cost of a caller we have not seen (phonenumbers is the hot spot).
        kind = phonenumbers.number_type(num)
        if kind != PhoneNumberType.UNKNOWN:
            e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
            return Caller(
                NumberStatus.VALID.value,
                withheld,
                e164,
                phonenumbers.region_code_for_number(num),
                kind,
                e164,
            )
        # Of two merely possible readings, the national one (as written) is kept.
        rank = 0 if reading == text else 1
        if possible is None or rank < possible_rank:
            possible, possible_rank = num, rank
    if possible is None:
        # Not a number, but still the same caller next time: hashed as printable ASCII.
        source = text.encode("ascii", "backslashreplace").decode("ascii")
        return Caller(NumberStatus.IMPOSSIBLE.value, withheld, None, None, None, source)
    e164 = phonenumbers.format_number(possible, phonenumbers.PhoneNumberFormat.E164)
    return Caller(NumberStatus.INVALID.value, withheld, e164, None, None, e164)


# Small on purpose: every entry holds a caller's plain number and E.164 for as long as it stays
# cached, and the service keeps only keyed hashes of callers. 1024 recent callers still spare
# phonenumbers for repeat calls (bursts, redials), without keeping a day of callers in memory.
_CLASSIFY_CACHE = 1024


@lru_cache(maxsize=_CLASSIFY_CACHE)
def _classify_cached(raw: str, callingpres: int, region: str) -> tuple[Any, ...]:
    # Cached as an exact tuple of atoms, which the garbage collector stops tracking (a tuple
    # subclass such as Caller stays tracked).
    return tuple(_classify(raw, callingpres, region))


@dataclass(frozen=True, slots=True)
class Line:
    """The dialled line: its E.164 when readable and the region national numbers belong to."""

    e164: str | None
    region: str


def read_dialled(raw: str, default_region: str, own_numbers: frozenset[str] = frozenset()) -> Line:
    """Our dialled line: E.164 when readable, and the region its callers' national numbers use.

    ``own_numbers`` (E.164) are tried first: a trunk that delivers ``6175550100`` for our
    +1 617 555 0100 is read as that number, whatever the default region.
    """
    if len(raw) <= _CACHEABLE:
        return _read_dialled_cached(raw, default_region, own_numbers)
    return Line(None, default_region)


@lru_cache(maxsize=4096)
def _read_dialled_cached(raw: str, default_region: str, own_numbers: frozenset[str]) -> Line:
    text = raw.strip()
    digits = text.removeprefix("+")
    if digits.isdigit():
        for own in sorted(own_numbers):
            national = _national_digits(own)
            # E.164 digits without '+', the national significant number, or that with the
            # trunk '0' most plans dial it with.
            if digits == own.removeprefix("+") or (
                national and digits in (national, "0" + national)
            ):
                return Line(own, _region_of(own, default_region))
    readings = [text]
    if text.isdigit() and not text.startswith("0"):
        readings.append("+" + text)
    possible: Line | None = None
    for reading in readings:
        try:
            num = phone.parse(reading, default_region)
        except phone.InvalidNumber:
            continue
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        if phonenumbers.is_valid_number(num):
            return Line(e164, _region_of(e164, default_region))
        # A merely possible reading (test ranges): kept unless a later reading is valid.
        possible = possible or Line(e164, _region_of(e164, default_region))
    return possible or Line(None, default_region)


@lru_cache(maxsize=256)
def _national_digits(e164: str) -> str | None:
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.national_significant_number(num)


def _region_of(e164: str, default_region: str) -> str:
    try:
        num = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return default_region
    region = phonenumbers.region_code_for_number(num)
    if region is None and num.country_code:
        # An invalid number of ours (test ranges): its country still says how to read.
        region = phonenumbers.region_code_for_country_code(num.country_code)
    return region if region in phonenumbers.SUPPORTED_REGIONS else default_region
