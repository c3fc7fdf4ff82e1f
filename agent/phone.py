"""Phone numbers: parsing to E.164 (via phonenumbers), local-presence keys, and masking for logs.

Never hand-parse numbers here: phonenumbers owns the numbering plans. This module must not log.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException

# Digits the dialplan may hand us that are not part of the number (formatting from humans).
_STRIP = str.maketrans("", "", " .-()/\t")


class InvalidNumber(ValueError):
    """The text is not a possible phone number."""


def parse(text: str, region: str) -> phonenumbers.PhoneNumber:
    """Parse a number as dialled in ``region`` (ISO country code). Raises InvalidNumber."""
    raw = text.strip().translate(_STRIP)
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if not raw or len(raw) > 20:
        raise InvalidNumber("empty or too long")
    return _parse_raw(raw, region)


@lru_cache(maxsize=4096)
def _parse_raw(raw: str, region: str) -> phonenumbers.PhoneNumber:
    """phonenumbers' parse is the costliest step of a decision, and one call's callee is read
    by several features (compliance, then outbound): the recent ones are kept. Callers must
    not modify the returned object."""
    try:
        num = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        raise InvalidNumber(str(exc)) from None
    if not phonenumbers.is_possible_number(num):
        raise InvalidNumber("not a possible number")
    return num


def to_e164(text: str, region: str, *, require_valid: bool = True) -> str:
    num = parse(text, region)
    if require_valid and not phonenumbers.is_valid_number(num):
        raise InvalidNumber("not a valid number")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=65536)
def presence_key(e164: str) -> str | None:
    """Key for local presence: country code plus geographic area code.

    Two numbers with the same key look local to each other to a patient. Mobiles and
    non-geographic numbers have no area; they get the country only (a weaker match is still
    better than another country).
    """
    try:
        num = phonenumbers.parse(e164, None)
    except NumberParseException:
        return None
    national = phonenumbers.national_significant_number(num)
    area_len = phonenumbers.length_of_geographical_area_code(num)
    if area_len > 0:
        return f"+{num.country_code}:{national[:area_len]}"
    return f"+{num.country_code}"


def preload_metadata() -> None:
    """Load every region's numbering plan now (~70 ms, a few MB) rather than on the first call
    from that region: a lazy load stalls the event loop, and every call in flight with it."""
    from phonenumbers import PhoneMetadata

    for region in phonenumbers.SUPPORTED_REGIONS:
        PhoneMetadata.metadata_for_region(region)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        PhoneMetadata.metadata_for_nongeo_region(code)


def mask(number: str | None) -> str:
    """What logs may show of a number: its last 4 digits."""
    if not number:
        return "-"
    digits = "".join(ch for ch in number if ch.isdigit())
    return "***" + digits[-4:] if len(digits) > 4 else "***"


def keyed_hash(secret: bytes, e164: str) -> str:
    """HMAC-SHA256 of an E.164 number: lets us match a patient's number without storing it."""
    return hmac.new(secret, e164.encode("ascii"), hashlib.sha256).hexdigest()
