"""Phone numbers: parsing to E.164 (via phonenumbers), local-presence keys, and masking for logs.

Never hand-parse numbers here: phonenumbers owns the numbering plans. This module must not log.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import cache, lru_cache
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException

# Digits the dialplan may hand us that are not part of the number (formatting from humans).
_STRIP = str.maketrans("", "", " .-()/\t")


class InvalidNumber(ValueError):
    """The text is not a possible phone number."""


def parse(text: str, region: str) -> phonenumbers.PhoneNumber:
    """Parse a number as dialled in ``region`` (ISO country code). Raises InvalidNumber."""
    return _parse_raw(_cleaned(text), region)


def _cleaned(text: str) -> str:
    raw = text.strip()
    if not raw.isascii() or not raw.lstrip("+").isdigit():  # as dialled by a machine: as is
        raw = raw.translate(_STRIP)
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    if not raw or len(raw) > 20:
        raise InvalidNumber("empty or too long")
    return raw


@lru_cache(maxsize=4096)
def _parse_raw(raw: str, region: str) -> phonenumbers.PhoneNumber:
    """phonenumbers' parse is the costliest step of a decision, and one call's callee is read
    by several features (compliance, then outbound): the recent ones are kept. Callers must
    not modify the returned object."""
    return _parse_possible(raw, region)


def _parse_possible(raw: str, region: str) -> phonenumbers.PhoneNumber:
    fast = _valid_as_dialled(raw, region)
    return fast if fast is not None else _parse_full(raw, region)


def _parse_full(raw: str, region: str) -> phonenumbers.PhoneNumber:
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


def listed_e164(text: str, region: str) -> str:
    """to_e164 for a number listed in pools.toml: the same answer and the same errors.

    A file of 100,000 numbers is read at every start, nearly all written in E.164 already:
    such a number is split on its country code (E.164 codes are prefix-free) and taken as it is
    when phonenumbers finds it possible, valid, and formats it back to the very same text.
    Anything else (national forms, spaces, a leading zero kept) goes the whole way through
    phonenumbers' parser, without the per-call cache (100,000 numbers would only churn it)."""
    fast = _e164_as_written(text)
    if fast is not None:
        return fast
    num = _parse_possible(_cleaned(text), region)
    if not phonenumbers.is_valid_number(num):
        raise InvalidNumber("not a valid number")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


# A number type's possible lengths (none: any) and pattern (None: no number of that type).
_Check = tuple[tuple[int, ...], "re.Pattern[str] | None"]


def _e164_as_written(text: str) -> str | None:
    """``text`` when it is already a valid number in E.164, else None (then parse it fully)."""
    if not (text.startswith("+") and text[1:].isdigit() and text.isascii() and len(text) <= 16):
        return None
    split = _country_code(text[1:4])
    if split is None:
        return None
    code, size = split
    national = text[1 + size :]
    if not national or national[0] == "0":
        return None  # a leading zero is phonenumbers' own business (Italy)
    checks = _type_checks(code)
    if checks is not None:
        # E.164 is "+", the code, the national number's digits: ``text`` itself, here.
        return text if _possible_and_valid(national, checks) else None
    num = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    if not (phonenumbers.is_possible_number(num) and phonenumbers.is_valid_number(num)):
        return None
    formatted = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return text if formatted == text else None


def dialled(text: str, region: str) -> tuple[int, str] | None:
    """(country code, national number) of a number valid as dialled in ``region``, read
    without phonenumbers' objects: ``+``, the code and the national number are its E.164.
    None when phonenumbers must read it (``parse``): anything unusual, every invalid number.
    Raises InvalidNumber for an empty or overlong text, as ``parse`` does."""
    return _split_callee(_cleaned(text), region)


# One call's callee is read by compliance, then by the decision: the recent ones are kept (a
# cleaned number is at most 20 characters, so 4,096 of them stay small whatever is dialled).
# Callees only: the pool's numbers, read once at start through ``parse``, do not fill it.
@lru_cache(maxsize=4096)
def _split_callee(raw: str, region: str) -> tuple[int, str] | None:
    return _split_as_dialled(raw, region)


def _valid_as_dialled(raw: str, region: str) -> phonenumbers.PhoneNumber | None:
    """``_split_as_dialled`` as the number phonenumbers.parse gives."""
    split = _split_as_dialled(raw, region)
    if split is None:
        return None
    return phonenumbers.PhoneNumber(country_code=split[0], national_number=int(split[1]))


def _split_as_dialled(raw: str, region: str) -> tuple[int, str] | None:
    """phonenumbers.parse's answer for a cleaned number that is valid as dialled, sooner, as
    (country code, national number); None when phonenumbers must read it itself (anything
    unusual, and every invalid number).

    A callee is nearly always new, and its parse was a decision's dearest step: most come as
    ``+`` and digits, or in the national format of a region whose national prefix phonenumbers
    reads as plain digits (France's "0"). When the national number left after the code or the
    prefix does not start with "0" or that prefix again, is valid by the region's compiled
    patterns (_possible_and_valid) and its code has that one region, phonenumbers reads the
    same number: tests/test_phone.py holds the two equal over every region's examples."""
    if not raw.isascii():
        return None
    if raw[:1] == "+":
        if not raw[1:].isdigit():
            return None
        split = _country_code(raw[1:4])
        if split is None:
            return None
        code, size = split
        national, plan = raw[1 + size :], _plan(code)
    else:
        dialled = _dialled_plan(region)
        if dialled is None or not raw.isdigit():
            return None
        plan, idd = dialled
        if not raw.startswith(plan[1]) or (idd is not None and idd.match(raw)):
            return None  # not national, or it may be an international call's prefix
        code, national = plan[0], raw[len(plan[1]) :]
    if plan is None or not national or national[0] == "0" or national.startswith(plan[1]):
        return None
    if not valid_in_its_region(code, national):  # plan[2] is its checks; kept for zone_of
        return None
    return code, national


# A country code's plan for _split_as_dialled: (code, national prefix, type checks).
_Plan = tuple[int, str, tuple[_Check, ...]]


@cache
def _plan(code: int) -> _Plan | None:
    """The plan of a country code one region owns, whose national prefix is plain digits
    (or none), read as written: no carrier codes, no transform rule."""
    checks = _type_checks(code)
    if checks is None:
        return None
    region = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code][0]
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    prefix = (meta.national_prefix or "") if meta is not None else ""
    if meta is None or meta.national_prefix_transform_rule or not (prefix.isdigit() or not prefix):
        return None
    if (meta.national_prefix_for_parsing or prefix) != prefix:
        return None
    return code, prefix, checks


@cache
def _dialled_plan(region: str) -> tuple[_Plan, re.Pattern[str] | None] | None:
    """The plan a number dialled nationally in ``region`` is read by (when its national prefix
    cannot start the region's country code), and the region's international prefix."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if meta is None or meta.country_code is None:
        return None
    plan = _plan(meta.country_code)
    if plan is None or not plan[1] or str(plan[0]).startswith(plan[1][0]):
        return None
    idd = meta.international_prefix
    return plan, re.compile(idd) if idd else None


@lru_cache(maxsize=1024)
def _country_code(head: str) -> tuple[int, int] | None:
    """The country code an E.164 number's first three digits start with, and its length."""
    codes = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
    for size in (1, 2, 3):
        if len(head) >= size and int(head[:size]) in codes:
            return int(head[:size]), size
    return None


@lru_cache(maxsize=4096)
def valid_in_its_region(country_code: int, national: str) -> bool | None:
    """phonenumbers.is_valid_number for the national significant number of a country code
    that one region owns (France...), from that region's compiled patterns; None where
    phonenumbers must decide itself (a code several regions share, a leading zero).
    Kept for the recent numbers: a callee's parse asks first, its time zone (compliance) next."""
    checks = _type_checks(country_code)
    if checks is None or not national or national[0] == "0":
        return None
    return _possible_and_valid(national, checks)


def _possible_and_valid(national: str, checks: tuple[_Check, ...]) -> bool:
    """phonenumbers.is_possible_number and is_valid_number together for a national number
    (no leading zero) of a country of one region (``_type_checks``), sooner.

    phonenumbers finds a number valid when it matches its region's general pattern and
    possible lengths, and the pattern of any one number type; such a number is possible too
    (its length is one of the region's). is_valid_number asks for the type, trying the rare
    types first (premium, toll free, shared cost...) and landlines and mobiles last, each
    through a pattern cache. A pool lists landlines and mobiles: asked first, against the
    region's patterns compiled once, they answer in a fraction of the time (a first start
    reads 100,000 of them). tests/test_phone.py holds the answers equal."""
    lengths, pattern = checks[0]
    if not _matches(national, lengths, pattern):
        return False
    return any(_matches(national, lengths, pattern) for lengths, pattern in checks[1:])


def _matches(national: str, lengths: tuple[int, ...], pattern: re.Pattern[str] | None) -> bool:
    """phonenumbers' test of a national number against one type: its possible lengths, if
    any, then a whole match of its pattern (none: no number of that type)."""
    if lengths and len(national) not in lengths:
        return False
    return pattern is not None and pattern.fullmatch(national) is not None


@cache
def _type_checks(country_code: int) -> tuple[_Check, ...] | None:
    """The general check and each number type's, likeliest first, of the country's one region;
    None for a code several regions share (+1, +44...) or none: phonenumbers decides those.
    The general check has the region's possible lengths (a number of another is impossible)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code, ())
    if len(regions) != 1 or regions[0] == phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY:
        return None
    meta = phonenumbers.PhoneMetadata.metadata_for_region(regions[0], None)
    if meta is None or not meta.general_desc or -1 in (meta.general_desc.possible_length or (-1,)):
        return None  # no lengths to tell a possible number by: phonenumbers decides
    descs = (
        meta.general_desc,
        meta.fixed_line,
        meta.mobile,
        meta.toll_free,
        meta.premium_rate,
        meta.shared_cost,
        meta.voip,
        meta.personal_number,
        meta.pager,
        meta.uan,
        meta.voicemail,
    )
    return tuple(_check_of(desc) for desc in descs)


def _check_of(desc: phonenumbers.PhoneNumberDesc | None) -> _Check:
    if desc is None or not desc.national_number_pattern:
        return (), None
    return tuple(desc.possible_length or ()), re.compile(desc.national_number_pattern)


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
    from that region: a lazy load stalls the event loop, and every call in flight with it.

    Also keeps each plan pattern phonenumbers compiles (its enable_pattern_cache): otherwise
    every parse and type test asks re.compile again, about a fifth of reading a number never
    seen (parse and type 102 -> 79 us); the patterns are the plans' own, a bounded set.
    Older phonenumbers releases (the package allows 8.13) lack it: they go on as before."""
    from phonenumbers import PhoneMetadata

    keep_patterns = getattr(phonenumbers, "enable_pattern_cache", None)
    if keep_patterns is not None:
        keep_patterns()
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


@lru_cache(maxsize=4096)
def keyed_hash(secret: bytes, e164: str) -> str:
    """HMAC-SHA256 of an E.164 number: lets us match a patient's number without storing it.

    One call's callee is hashed by several features (compliance's opt-out key, the outbound
    audit row): the recent ones are kept, as their parses are (_parse_raw)."""
    mac = _keyed(secret).copy()
    mac.update(e164.encode("ascii"))
    return mac.hexdigest()


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> hmac.HMAC:
    """The key's HMAC state, made once per key: each number then costs two SHA-256 blocks.
    A hash constructor (not the name "sha256") keeps hmac on its copyable SHA-256 states:
    OpenSSL's own HMAC sets the key up again on every call, twice the cost here."""
    return hmac.new(secret, digestmod=_sha256)


def _sha256(data: bytes = b"") -> Any:
    return hashlib.sha256(data)
