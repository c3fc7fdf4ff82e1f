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


def test_a_callee_valid_as_dialled_reads_as_phonenumbers_reads_it() -> None:
    """A callee read without phonenumbers' whole parse (valid, in E.164 or in a region's
    national format) is the very number phonenumbers' parse gives, and anything the shortcut
    declines still goes through phonenumbers: every region's example numbers of every type and
    numbers one digit or one length away, dialled nationally (with the region's national
    prefix, without it, after an international prefix) and in E.164, read in every region."""
    import phonenumbers
    from phonenumbers import PhoneNumberType

    from agent.phone import _parse_full, _parse_possible, _valid_as_dialled

    shortcut = checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert meta is not None
        prefix = meta.national_prefix or ""
        idd = meta.preferred_international_prefix or meta.international_prefix or ""
        for kind in range(PhoneNumberType.VOICEMAIL + 1):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            variants = {national, national[:-1], national + "5", prefix + prefix + national}
            variants |= {national[:i] + "9" + national[i + 1 :] for i in range(len(national))}
            for digits in variants:
                texts = {prefix + digits, digits, f"+{example.country_code}{digits}"}
                if idd.isdigit():
                    texts.add(f"{idd}{example.country_code}{digits}")
                for text in texts:
                    for reader in (region, "FR"):
                        want = _read(_parse_full, text, reader)
                        assert _read(_parse_possible, text, reader) == want, (text, reader)
                        shortcut += _valid_as_dialled(text, reader) is not None
                        checked += 1
    assert checked > 100_000 and shortcut > 10_000, (checked, shortcut)


def _read(parse: Callable[[str, str], object], text: str, region: str) -> object:
    try:
        return parse(text, region)
    except InvalidNumber:
        return "invalid"


def test_a_hostile_or_broken_callee_gets_phonenumbers_answer_not_the_shortcuts() -> None:
    """What the dialplan may hand over that is not a plain number: other scripts' digits,
    a bare prefix or code, letters, signs. The shortcut declines each (phonenumbers decides,
    and the answer is the same as without the shortcut); nothing raises but InvalidNumber."""
    from agent.phone import _parse_full, _parse_possible, _valid_as_dialled

    texts = [
        "٠٦١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "０６１２３４５６７８",  # full-width digits
        "0",
        "+",
        "+33",
        "++33612345678",
        "+33-612345678",
        "06123456789012345",
        "0612345678\x00",
        "06 12 34 56 7A",
        "0033612345678",
        "+0612345678",
    ]
    for text in texts:
        for region in ("FR", "US", "ZZ"):
            if not text.isascii() or region == "ZZ":
                assert _valid_as_dialled(text, region) is None
            assert _read(_parse_possible, text, region) == _read(_parse_full, text, region)


def test_a_callee_is_cleaned_as_before_whether_it_needs_cleaning_or_not() -> None:
    """A callee of digits only skips the clean-up: the text is the same either way, for
    machine-dialled numbers, human formatting, other scripts' digits and random texts."""
    import random

    from agent.phone import _STRIP, _cleaned

    def before(text: str) -> str | None:
        raw = text.strip().translate(_STRIP)
        raw = "+" + raw[2:] if raw.startswith("00") else raw
        return raw if raw and len(raw) <= 20 else None

    def now(text: str) -> str | None:
        try:
            return _cleaned(text)
        except InvalidNumber:
            return None

    rng = random.Random(13)
    alphabet = "0123456789+ .-()/\t\n\x00٣３aZ#*"
    texts = ["0612345678", "+33612345678", "0033612345678", "++336", " 06 12 34 56 78 ",
             "06.12.34.56.78", "(01) 42-00", "٣٣", "３３", "", "+", "00", "1" * 21]  # fmt: skip
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 24))) for _ in range(20_000)]
    for text in texts:
        assert now(text) == before(text), repr(text)
