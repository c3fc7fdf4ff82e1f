"""A callee's number as compliance reads it: E.164 that knows France's overseas departments.

France's ten-digit plan also numbers La Réunion, Mayotte, Guadeloupe (with Saint-Barthélemy
and Saint-Martin), Martinique and Guyane: ``0692 12 34 56`` dialled from Paris is a Réunion
mobile, +262 692 12 34 56, while phonenumbers reads it in region FR as an invalid +33 number.
When a national-format number is not valid in the configured region, the regions sharing that
region's plan are tried (phonenumbers parses and validates; this module only lists who shares
a plan). No I/O, no logging.
"""

from __future__ import annotations

import phonenumbers

from agent import phone

# Regions dialled with the same national numbers as the key region (ARCEP's plan for FR).
SHARED_PLANS: dict[str, tuple[str, ...]] = {"FR": ("RE", "YT", "GP", "MQ", "GF")}


def to_e164(text: str, region: str) -> str:
    """E.164 of a callee; raises phone.InvalidNumber. Like the outbound service, a number that
    is possible but not valid anywhere is kept as parsed (an unknown new range still counts)."""
    return resolve(text, region)[0]


def resolve(text: str, region: str) -> tuple[str, str]:
    """(E.164 as this module reads it, E.164 as phone.to_e164 reads it without validation)."""
    num = phone.parse(text, region)
    plain = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    international = text.strip().startswith(("+", "00"))
    if not international and not phonenumbers.is_valid_number(num):
        for other in SHARED_PLANS.get(region.upper(), ()):
            try:
                candidate = phone.parse(text, other)
            except phone.InvalidNumber:
                continue
            if phonenumbers.is_valid_number(candidate):
                return phonenumbers.format_number(
                    candidate, phonenumbers.PhoneNumberFormat.E164
                ), plain
    return plain, plain


def audit_forms(e164: str, region: str) -> tuple[str, ...]:
    """The E.164 forms the outbound service may have stored this callee under: the number
    itself and, for an overseas number, how region ``region`` reads its national form
    (``+262692123456`` dialled as ``0692123456`` in FR is stored as ``+33692123456``)."""
    forms = {e164}
    num = phonenumbers.parse(e164, None)
    if phonenumbers.region_code_for_number(num) in SHARED_PLANS.get(region.upper(), ()):
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        try:
            forms.add(phone.to_e164(national, region, require_valid=False))
        except phone.InvalidNumber:
            pass
    return tuple(sorted(forms))
