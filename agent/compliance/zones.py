"""The callee's time zone without walking every number type: policy.zone_of's answer, cheaper.

phonenumbers' time zone look-up first asks for the number's type (premium, toll-free, shared
cost, VoIP, personal, pager, UAN, voicemail, fixed line, mobile: up to eleven patterns) only
to choose between the country's zones and the zones of the number's prefix. For a country
code where phonenumbers names one zone for every number (France: Europe/Paris), the type
cannot change the answer; only whether the number is valid at all can (an invalid number has
no zone): agent.phone.valid_in_its_region answers that on phonenumbers' own patterns. Any
other country code (several zones, several regions) goes the whole way (policy.zone_of).

Pure: no I/O, no logging; caches hold compiled metadata patterns, never a number.
"""

from __future__ import annotations

from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers.tzdata import TIMEZONE_DATA

from agent import phone
from agent.compliance import policy

_NON_GEO = phonenumbers.REGION_CODE_FOR_NON_GEO_ENTITY


def zone_of(num: phonenumbers.PhoneNumber) -> str | None:
    """policy.zone_of(num), without the type walk where the type cannot matter."""
    code = num.country_code
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ()) if code else ()
    if len(regions) != 1 or regions[0] == _NON_GEO or code is None:
        return policy.zone_of(num)  # several regions share the code: phonenumbers picks one
    zone = single_zone(code)
    if zone is None:
        return policy.zone_of(num)
    valid = phone.valid_in_its_region(code, phonenumbers.national_significant_number(num))
    if valid is None:
        return policy.zone_of(num)
    return zone if valid else None


@lru_cache(maxsize=512)
def single_zone(country_code: int) -> str | None:
    """The zone phonenumbers gives every valid number of this country code, geographic or
    not: its country entry, when every longer prefix of the code names that zone alone too.
    None when the zone may depend on the number (policy.zone_of decides)."""
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
