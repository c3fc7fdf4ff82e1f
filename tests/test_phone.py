"""agent.phone against phonenumbers: the shortcuts a 100,000-number start takes give
phonenumbers' own answers."""

from __future__ import annotations


def test_a_number_listed_in_e164_is_judged_valid_as_phonenumbers_judges_it() -> None:
    """agent.phone asks the likeliest number types first: the same verdict as phonenumbers'
    is_possible_number and is_valid_number, for every region's example numbers of every type
    and for numbers one digit or one length away from them (most invalid)."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    from agent.phone import _possible_and_valid

    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(PhoneNumberType.VOICEMAIL + 1):  # every type, FIXED_LINE (0) on
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            variants = {national, national[:-1], national + "5"}
            variants |= {national[:i] + d + national[i + 1 :] for i in range(len(national))
                         for d in "09"}  # fmt: skip
            for digits in variants:
                if not digits or digits[0] == "0":
                    continue
                num = phonenumbers.PhoneNumber(
                    country_code=example.country_code, national_number=int(digits)
                )
                expected = phonenumbers.is_possible_number(num) and phonenumbers.is_valid_number(
                    num
                )
                assert _possible_and_valid(num) == expected, (region, digits)
                checked += 1
    assert checked > 10_000
