"""A callee read the short way (valid as dialled, no phonenumbers objects) gets exactly the
answer of the whole parse: compliance's reading (E.164 forms and time zone, the overseas
departments included) and the outbound decision's (E.164 and local-presence area)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import phonenumbers
from phonenumbers import PhoneNumberType

from agent import phone
from agent.compliance import numbers
from agent.contact.presence import callee_area, parsed_area

# The regions sharing France's plan, France's other territories, neighbours, and others.
REGIONS = ("FR", "RE", "YT", "GP", "MQ", "GF", "PM", "NC", "PF", "WF", "BE", "DE", "IT", "US")


def callee_texts() -> Iterator[str]:
    """Every type's example number of each region, dialled nationally (with and without the
    national prefix), in E.164 and after 00, and the same with one digit changed."""
    for region in REGIONS:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert meta is not None
        prefix = meta.national_prefix or ""
        for kind in range(PhoneNumberType.VOICEMAIL + 1):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            variants = {national} | {
                national[:i] + "7" + national[i + 1 :] for i in range(len(national))
            }
            for digits in variants:
                code = example.country_code
                yield from (prefix + digits, digits, f"+{code}{digits}", f"00{code}{digits}")


def answer(read: Callable[..., object], *args: object) -> object:
    try:
        return read(*args)
    except phone.InvalidNumber:
        return "invalid"


def test_compliance_reads_a_callee_the_short_way_as_the_whole_parse_does() -> None:
    short = checked = 0
    for text in callee_texts():
        for region in ("FR", "BE", "US"):
            want = answer(numbers._read_parsed, text, region, "Europe/Paris")
            assert answer(numbers.read, text, region, "Europe/Paris") == want, (text, region)
            short += answer(numbers._read_as_dialled, text, region) not in (None, "invalid")
            checked += 1
    # Réunion, dialled nationally from France, keeps its own code and zone (the long way).
    assert numbers.read("0692123456", "FR", "UTC").zone == "Indian/Reunion"
    assert numbers._read_as_dialled("0692123456", "FR") is None
    assert numbers.read("0612345678", "FR", "UTC") == (
        "+33612345678", "+33612345678", "Europe/Paris", ("+33612345678",)
    )  # fmt: skip
    assert checked > 5_000 and short > 1_000, (checked, short)


def whole_parse(text: str, region: str) -> tuple[str | None, str]:
    parsed = phone._parse_full(phone._cleaned(text), region)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return parsed_area(parsed, e164), e164


def test_the_outbound_decision_reads_a_callee_the_short_way_as_the_whole_parse_does() -> None:
    short = 0
    for text in callee_texts():
        for region in ("FR", "BE", "US"):
            want = answer(whole_parse, text, region)
            assert answer(callee_area, text, region) == want, (text, region)
            short += answer(phone.dialled, text, region) not in (None, "invalid")
    assert callee_area("04 91 00 00 05", "FR") == ("FR-13", "+33491000005")
    assert short > 1_000


def test_a_hostile_or_broken_callee_gets_the_whole_parse_answer_both_ways() -> None:
    """What a dialplan may hand over that is not a plain number: the short reads decline it
    (or refuse it as phone.parse does), never answer otherwise than the whole parse."""
    texts = [
        "",
        "   ",
        "٠٦١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "０６１２３４５６７８",  # full-width digits
        "+",
        "+33",
        "++33612345678",
        "0612345678\x00",
        "06 12 34 56 7A",
        "0" * 40,
        "+0612345678",
        "1234",  # an internal extension
    ]
    for text in texts:
        for region in ("FR", "US", "ZZ"):
            assert answer(callee_area, text, region) == answer(whole_parse, text, region), text
            assert answer(numbers.read, text, region, "UTC") == answer(
                numbers._read_parsed, text, region, "UTC"
            ), text
            if not text.isascii() or not text.strip():
                assert answer(phone.dialled, text, region) in (None, "invalid")
