"""A callee's number as compliance reads it: E.164 that knows France's overseas departments.

France's ten-digit plan also numbers La Réunion, Mayotte, Guadeloupe (with Saint-Barthélemy
and Saint-Martin), Martinique and Guyane: ``0692 12 34 56`` dialled from Paris is a Réunion
mobile, +262 692 12 34 56, while phonenumbers reads it in region FR as an invalid +33 number.
When a national-format number is not valid in the configured region, the regions sharing that
region's plan are tried (phonenumbers parses and validates; this module only lists who shares
a plan). No I/O, no logging.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import phonenumbers

from agent import phone
from agent.compliance import zones

# Regions dialled with the same national numbers as the key region (ARCEP's plan for FR).
SHARED_PLANS: dict[str, tuple[str, ...]] = {"FR": ("RE", "YT", "GP", "MQ", "GF")}
_E164 = phonenumbers.PhoneNumberFormat.E164


class Callee(NamedTuple):  # a tuple: read for every callee never seen before, made cheaply
    e164: str  # as compliance reads it (an overseas number dialled nationally: its own code)
    plain: str  # as phone.to_e164(text, region, require_valid=False) reads it (call_audit's)
    zone: str  # IANA time zone (policy.zone_of's, read by zones.zone_of), else the fallback zone
    audit_forms: tuple[str, ...]  # every E.164 form call_audit may hold this callee under


def read(text: str, region: str, fallback_zone: str) -> Callee:
    """Parse a callee once (phonenumbers' dearest step). Raises phone.InvalidNumber.

    A number whose time zone phonenumbers cannot tell is not valid in ``region``; read in
    national format, it is tried in the regions sharing ``region``'s plan."""
    return _read_as_dialled(text, region) or _read_parsed(text, region, fallback_zone)


def _read_as_dialled(text: str, region: str) -> Callee | None:
    """``read``'s answer without phonenumbers' objects, for the usual callee: valid as dialled
    (phone.dialled), of a country code with one region and one time zone (France), that region
    not one sharing ``region``'s plan (those may have been dialled in two forms). None: ask
    ``_read_parsed``. tests/test_compliance_numbers.py holds the two equal."""
    split = phone.dialled(text, region)
    if split is None:
        return None
    code, national = split
    zone = zones.single_zone(code)  # valid as dialled: the zone of every valid number
    if zone is None or phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code][0] in SHARED_PLANS.get(
        region.upper(), ()
    ):
        return None
    e164 = f"+{code}{national}"
    return Callee(e164, e164, zone, (e164,))


def _read_parsed(text: str, region: str, fallback_zone: str) -> Callee:
    num = parsed = phone.parse(text, region)
    plain = phonenumbers.format_number(num, _E164)
    zone = zones.zone_of(num)
    shared = SHARED_PLANS.get(region.upper(), ())
    if zone is None and shared and not text.strip().startswith(("+", "00")):
        for other in shared:
            try:
                candidate = phone.parse(text, other)
            except phone.InvalidNumber:
                continue
            if phonenumbers.is_valid_number(candidate):
                num, zone = candidate, zones.zone_of(candidate)
                break
    e164 = plain if num is parsed else phonenumbers.format_number(num, _E164)
    forms = {e164, plain}
    if phonenumbers.region_code_for_number(num) in shared:
        # Written in E.164 now, it may have been dialled nationally before.
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        with contextlib.suppress(phone.InvalidNumber):
            forms.add(phone.to_e164(national, region, require_valid=False))
    return Callee(e164, plain, zone or fallback_zone, tuple(sorted(forms)))


def to_e164(text: str, region: str) -> str:
    """E.164 of a callee as compliance reads it; raises phone.InvalidNumber."""
    return read(text, region, "UTC").e164
