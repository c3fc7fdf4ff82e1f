"""agent.phone against phonenumbers: the shortcuts a 100,000-number start takes give
phonenumbers' own answers."""

from __future__ import annotations

from collections.abc import Callable

from agent.phone import InvalidNumber


def test_a_number_listed_in_e164_is_judged_valid_as_phonenumbers_judges_it() -> None:
    """A number listed in E.164 reads as phonenumbers' whole parse reads it (agent.phone takes
    it as written, asking the likeliest number types first): every region's example numbers
    of every type, and numbers one digit or one length away from them (most invalid)."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    from agent.phone import listed_e164, to_e164

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(PhoneNumberType.VOICEMAIL + 1):  # every type, FIXED_LINE (0) on
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            variants = {national, national[:-1], national + "5"}
            variants |= {national[:i] + "9" + national[i + 1 :] for i in range(len(national))}
            for digits in variants:
                if not digits or digits[0] == "0":
                    continue
                text = f"+{example.country_code}{digits}"
                assert _outcome(listed_e164, text) == _outcome(to_e164, text), (region, digits)
                checked += 1
    assert checked > 10_000


def _outcome(read: Callable[[str, str], str], text: str) -> str:
    try:
        return read(text, "FR")
    except InvalidNumber:
        return "invalid"
