"""Local presence at département level: pure functions, no I/O, no clock.

Which area a number or a postal code stands for, as a key the outbound selector groups numbers
by: ``FR-13`` (Bouches-du-Rhône) for a French geographic number or postal code, the
country-and-area-code key of agent.phone for other countries, and None for what has no area
(mobiles, 09 numbers). A key of None never matches: the caller ID is then the least used.

Why a table: phonenumbers' geocoder names most French geographic numbers only "France"
(+33 4 91 … and +33 4 72 … alike), and its area code for France is the first digit (five
zones), which made a Marseille patient (04 91) "local" to a Lyon number (04 72). French
geographic numbers were allocated by elementary numbering zone (ZNE); the first three digits
after the 0 (ZAB) fall in one département for the blocks below, which cover the main cities.
A prefix not listed (or shared by several départements, such as 04 92 or 05 49) has no key:
such a callee gets the least-used number, never a wrong département. Since 2023 a geographic
number may be used anywhere in France, so this is a hint, as it is for a patient reading it.
"""

from __future__ import annotations

import re

import phonenumbers

from agent import phone

# ZAB (national significant number's first three digits) -> département.
_FR_ZAB: dict[str, str] = {
    # Île-de-France
    "140": "75", "142": "75", "144": "75", "153": "75", "155": "75", "156": "75",
    "130": "78", "139": "78", "134": "95", "160": "77", "164": "77", "169": "91",
    # North-west
    "231": "14", "235": "76", "238": "45", "240": "44", "241": "49", "247": "37",
    "296": "22", "297": "56", "298": "29", "299": "35", "223": "35",
    # North-east
    "320": "59", "328": "59", "359": "59", "362": "59", "321": "62", "322": "80",
    "323": "02", "326": "51", "344": "60", "380": "21", "381": "25", "383": "54",
    "385": "71", "387": "57", "388": "67", "390": "67", "368": "67", "389": "68",
    # South-east
    "413": "13", "484": "13", "488": "13", "491": "13", "442": "13", "490": "84",
    "426": "69", "427": "69", "437": "69", "472": "69", "478": "69", "493": "06",
    "497": "06", "494": "83", "466": "30", "467": "34", "473": "63", "476": "38",
    "477": "42", "450": "74", "479": "73", "470": "03",
    # South-west
    "534": "31", "561": "31", "562": "31", "535": "33", "556": "33", "557": "33",
    "545": "16", "546": "17", "558": "40", "559": "64",
}  # fmt: skip

_POSTAL = re.compile(r"\d{5}")
# A French geographic number in E.164: its national significant number is the nine digits
# after +33, exactly as phonenumbers reads it (no prefix to strip when they start with 1-5).
_FR_GEOGRAPHIC = re.compile(r"\+33([1-5]\d{8})")
_DEPARTEMENT = re.compile(r"(?:0[1-9]|[1-8]\d|9[0-5]|2[AaBb]|97[1-6])")


def number_area(e164: str) -> str | None:
    """The area key of one of our numbers or of a callee (E.164); None when it has no area."""
    french = _FR_GEOGRAPHIC.fullmatch(e164)
    if french is not None:  # most numbers: read without a parse (100,000 at a first start)
        departement = _FR_ZAB.get(french[1][:3])
        return f"FR-{departement}" if departement else None
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return None
    return parsed_area(parsed, e164)


def parsed_area(parsed: phonenumbers.PhoneNumber, e164: str) -> str | None:
    """number_area of a number parsed already (``e164`` its E.164): no second parse on a
    call's path."""
    national = phonenumbers.national_significant_number(parsed)
    return national_area(parsed.country_code or 0, national, e164)


def callee_area(text: str, region: str) -> tuple[str | None, str]:
    """(area key, E.164) of a callee as dialled in ``region``: phone.to_e164(text, region,
    require_valid=False) and parsed_area of it, without phonenumbers' objects for a number
    valid as dialled (phone.dialled; nearly every callee). Raises phone.InvalidNumber."""
    split = phone.dialled(text, region)
    if split is not None:
        code, national = split
        e164 = f"+{code}{national}"
        return national_area(code, national, e164), e164
    parsed = phone.parse(text, region)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return parsed_area(parsed, e164), e164


def national_area(code: int, national: str, e164: str) -> str | None:
    """number_area of the number with country code ``code``, national significant number
    ``national`` and E.164 ``e164``."""
    if code != 33:
        return phone.presence_key(e164)
    if national[:1] not in "12345" or len(national) != 9:
        return None  # mobile, 08, 09: no place
    departement = _FR_ZAB.get(national[:3])
    return f"FR-{departement}" if departement else None


def area_hint(text: str) -> str | None:
    """The area key of the dialplan's ``area=`` value: a French postal code (13008) or a
    département (13, 2A, 974). None for anything else (never guessed)."""
    value = text.strip()
    if _POSTAL.fullmatch(value):
        if value.startswith("97"):
            code = value[:3]
        elif value.startswith("20"):  # Corsica: 200xx-201xx Corse-du-Sud, 202xx-206xx Haute-Corse
            code = "2A" if value[2] in "01" else "2B"
        else:
            code = value[:2]
        value = code
    if not _DEPARTEMENT.fullmatch(value):
        return None
    return f"FR-{value.upper()}"
