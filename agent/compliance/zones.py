"""The callee's time zone without walking every number type: policy.zone_of's answer, cheaper.

phonenumbers' time zone look-up first asks for the number's type (premium, toll-free, shared
cost, VoIP, personal, pager, UAN, voicemail, fixed line, mobile: up to eleven patterns) only
to choose between the country's zones and the zones of the number's prefix. For a country
code where phonenumbers names one zone for every number (France: Europe/Paris), the type
cannot change the answer; only whether the number is valid at all can (an invalid number has
no zone). Valid means the same as for phonenumbers: the region's general pattern matches and
so does one type's pattern, tried here in the order patients' numbers match them (fixed line,
mobile first), with the same length and pattern tests, on phonenumbers' own metadata. Any
other country code (several zones, several regions) goes the whole way (policy.zone_of).

Pure: no I/O, no logging; caches hold compiled metadata patterns, never a number.
"""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberDesc
from phonenumbers.tzdata import TIMEZONE_DATA

from agent.compliance import policy

# The type patterns of number_type, likeliest first for a callee (the order cannot change
# whether one of them matches).
_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)

_NON_GEO = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY
_Pattern = tuple[frozenset[int], re.Pattern[str]]


def zone_of(num: phonenumbers.PhoneNumber) -> str | None:
    """policy.zone_of(num), without the type walk where the type cannot matter."""
    code = num.country_code
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()) if code else ()
    if len(regions) != 1 or regions[0] == _NON_GEO or code is None:
        return policy.zone_of(num)  # several regions share the code: phonenumbers picks one
    zone = _single_zone(code)
    if zone is None:
        return policy.zone_of(num)
    return zone if _valid(phonenumbers.national_significant_number(num), regions[0]) else None


@lru_cache(maxsize=512)
def _single_zone(country_code: int) -> str | None:
    """The zone phonenumbers gives every valid number of this country code, geographic or
    not: its country entry, when every longer prefix of the code names that zone alone too."""
    code = str(country_code)
    own = TIMEZONE_DATA.get(code)
    if own is None or len(own) != 1 or own[0] == "Etc/Unknown":
        return None
    if any(zones != own for prefix, zones in TIMEZONE_DATA.items() if prefix.startswith(code)):
        return None
    try:
        ZoneInfo(own[0])
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return own[0]


def _valid(national: str, region: str) -> bool:
    general, types = _patterns(region)
    size = len(national)
    if general is None or not _matches(general, national, size):
        return False
    for lengths, regex in types:  # _matches, inlined: this runs for every new callee
        if (not lengths or size in lengths) and regex.fullmatch(national) is not None:
            return True
    return False


def _matches(pattern: _Pattern, national: str, size: int) -> bool:
    lengths, regex = pattern
    # No lengths listed: they are the general description's, checked already.
    return (not lengths or size in lengths) and regex.fullmatch(national) is not None


@lru_cache(maxsize=512)
def _patterns(region: str) -> tuple[_Pattern | None, tuple[_Pattern, ...]]:
    """A region's general pattern and its type patterns, compiled once."""
    metadata = PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return None, ()
    # Mobile numbers share fixed lines' pattern there: number_type does not test it again.
    same = metadata.same_mobile_and_fixed_line_pattern
    names = [n for n in _TYPES if not (same and n == "mobile")]
    types = (_compiled(getattr(metadata, name, None)) for name in names)
    return _compiled(metadata.general_desc), tuple(p for p in types if p is not None)


def _compiled(desc: PhoneNumberDesc | None) -> _Pattern | None:
    if desc is None or not desc.national_number_pattern:
        return None  # phonenumbers: no pattern never matches
    return frozenset(desc.possible_length or ()), re.compile(desc.national_number_pattern)
