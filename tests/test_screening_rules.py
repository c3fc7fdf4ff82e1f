"""Screening rules, lists and the [screening] config, without sockets or a store."""

from __future__ import annotations

import pytest

from agent.config import parse_config
from agent.errors import ConfigError
from agent.screening.callers import (
    Attestation,
    _classify_cached,
    classify_caller,
    combine_verify_result,
    parse_attestation,
    read_dialled,
)
from agent.screening.config import ScreeningConfig
from agent.screening.lists import ListMatcher, normalise_entry
from agent.screening.rules import CallFacts, evaluate
from agent.screening.windows import BurstCounter, FloodCounter

BASE = """
[pools.reminders]
purposes = ["reminder"]
numbers = [ { number = "+33142000001", name = "Clinique StMarc" } ]
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A", Attestation.A),
        ("b", Attestation.B),
        ("C", Attestation.C),
        ("TN-Validation-Passed-A", Attestation.A),
        ("TN-Validation-Passed-C", Attestation.C),
        ("TN-Validation-Passed", Attestation.PASSED),
        ("tn-validation-passed-b", Attestation.B),
        ("TN-Validation-Failed", Attestation.FAILED),
        ("TN-Validation-Failed-A", Attestation.FAILED),
        ("No-TN-Validation", Attestation.MISSING),
        ("", Attestation.MISSING),
        ("   ", Attestation.MISSING),
        ("verstat=TN-Validation-Passed-B", Attestation.B),
        (
            "<sip:+33612345678@ims.example;user=phone;verstat=TN-Validation-Failed>",
            Attestation.FAILED,
        ),
        # Asterisk's STIR_SHAKEN(0,verify_result)
        ("success", Attestation.PASSED),
        ("Verification passed", Attestation.PASSED),
        ("Verification not present", Attestation.MISSING),
        ("missing_identity_hdr", Attestation.MISSING),
        ("signature_validation", Attestation.FAILED),
        ("cid_orig_tn_mismatch", Attestation.FAILED),
        ("cert_not_trusted", Attestation.FAILED),
        ("Signature verification failed", Attestation.FAILED),
        ("internal_error", Attestation.MISSING),  # our PBX's trouble, not the caller's
        # Anything unknown is no signal at all: never taken for "A".
        ("AA", Attestation.MISSING),
        ("full", Attestation.MISSING),
    ],
)
def test_attestation_from_every_form_the_dialplan_may_pass(
    text: str, expected: Attestation
) -> None:
    assert parse_attestation(text) is expected


@pytest.mark.parametrize(
    ("entry", "region", "stored"),
    [
        ("+44*", None, "+44*"),
        ("0044*", None, "+44*"),
        ("+1 876*", None, "+1876*"),
        ("+33 6 12 34 56 78", None, "+33612345678"),
        ("0033612345678", None, "+33612345678"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("(617) 555-0123", "US", "+16175550123"),
        ("+33700000000", None, "+33700000000"),  # not valid, still blockable
    ],
)
def test_list_entries_are_stored_in_e164(entry: str, region: str | None, stored: str) -> None:
    assert normalise_entry(entry, region) == stored


@pytest.mark.parametrize("entry", ["44*", "06*", "+*", "*", "+999*", "0612345678", "12", "abc"])
def test_list_entries_that_could_match_wrongly_are_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        normalise_entry(entry)


def test_the_longest_list_entry_matches() -> None:
    matcher = ListMatcher.of(["+44*", "+447911*", "+33612345678"])
    assert matcher.match("+447911123456") == "+447911*"
    assert matcher.match("+442079460000") == "+44*"
    assert matcher.match("+33612345678") == "+33612345678"
    assert matcher.match("+33612345679") is None
    assert matcher.match(None) is None


def facts(caller: str, att: str = "A", pres: int = 0, **kw: object) -> CallFacts:
    line = read_dialled("+33142000001", "FR")
    return CallFacts(
        caller=classify_caller(caller, pres, line.region),
        line=line,
        attestation=parse_attestation(att),
        **kw,  # type: ignore[arg-type]  # per-test field overrides
    )


def test_every_rule_is_explained_fired_or_not() -> None:
    decision = evaluate(facts("0899123456", "C"), ScreeningConfig())
    codes = [r.code for r in decision.rules]
    assert codes == [
        "blocklist",
        "withheld",
        "invalid_number",
        "own_number",
        "premium_rate",
        "toll_free",
        "international",
        "stir_c",
        "burst",
        "flood",
        "callback",
    ]
    assert decision.reasons == ("premium_rate", "stir_c")
    assert decision.score == sum(r.points for r in decision.rules) == 75
    assert decision.verdict == "voicemail"


def test_weights_and_thresholds_come_from_the_config() -> None:
    strict = ScreeningConfig.model_validate(
        {
            "weights": {"stir_missing": 35},
            "thresholds": {"challenge": 20, "voicemail": 50, "block": 70},
        }
    )
    assert evaluate(facts("0612345678", ""), strict).verdict == "challenge"
    assert evaluate(facts("0612345678", ""), ScreeningConfig()).verdict == "allow"
    never_block = ScreeningConfig.model_validate({"thresholds": {"block": 101}})
    assert evaluate(facts("+33142000001", "failed", own_number=True), never_block).verdict == (
        "voicemail"
    )


def test_the_score_is_clamped_to_0_100() -> None:
    everything = facts(
        "0899123456", "failed", blocklisted="+33899*", burst_calls=9, flood_callers=99
    )
    assert evaluate(everything, ScreeningConfig()).score == 100
    vouched = ScreeningConfig.model_validate({"weights": {"callback": -100}})
    assert evaluate(facts("0612345678", "A", callback=True), vouched).score == 0


def test_attestation_a_never_allows_on_its_own() -> None:
    # A verified spoof of our own number is still a spoof.
    decision = evaluate(facts("+33142000001", "A", own_number=True), ScreeningConfig())
    assert decision.verdict == "block"
    assert decision.reasons == ("own_number", "stir_a")


def test_disabled_screening_allows_with_a_reason() -> None:
    decision = evaluate(facts("", ""), ScreeningConfig(enabled=False))
    assert (decision.verdict, decision.reasons) == ("allow", ("screening_disabled",))


def test_screening_section_is_validated_with_located_errors() -> None:
    bad = (
        BASE
        + """
[screening]
allow = ["06*"]
[screening.weights]
withhled = 40
[screening.thresholds]
challenge = 70
voicemail = 60
"""
    )
    with pytest.raises(ConfigError) as err:
        parse_config(bad)
    text = "\n".join(err.value.problems)
    assert "screening.weights.withhled: unknown key" in text
    assert "screening.thresholds" in text and "challenge <= voicemail <= block" in text
    assert "screening.allow" in text and "+44" in text


def test_screening_section_is_optional_and_normalised() -> None:
    assert parse_config(BASE).raw.screening == ScreeningConfig()
    config = parse_config(
        BASE
        + """
[screening]
default_region = "us"
allow = ["0033 6 12 34 56 78", "+44*"]
own_numbers = ["+33 1 42 00 00 99"]
[screening.windows]
burst_calls = 3
"""
    )
    screening = config.raw.screening
    assert screening.allow == ("+33612345678", "+44*")
    assert screening.own_numbers == ("+33142000099",)
    assert screening.default_region == "US"
    assert screening.windows.burst_calls == 3


def test_windows_forget_callers_once_their_window_has_passed() -> None:
    bursts, floods = BurstCounter(), FloodCounter()
    for i in range(1000):
        bursts.record(f"caller{i}", float(i), 60)
        floods.record("line", f"caller{i}", float(i), 60)
    assert len(bursts) <= 61 and len(floods) <= 61
    assert bursts.record("caller999", 1000.0, 60) == 2
    assert floods.record("line", "caller999", 1000.0, 60) == 59  # callers 941..999


def test_a_caller_calling_hundreds_of_times_is_counted_in_its_window() -> None:
    bursts = BurstCounter()
    counts = [bursts.record("robocaller", float(t), 60) for t in range(600)]
    # Calls in the last 60 s, this one included: 1, 2, ... then 60 from t=59 on.
    assert counts == [min(t + 1, 60) for t in range(600)]
    long = BurstCounter()
    counts = [long.record("robocaller", float(t), 10_000) for t in range(600)]
    assert counts[-1] == BurstCounter.MAX_KEPT  # at most this many are kept, whatever the window
    # The clock stepped back 30 s: the call still counts, and so do those still in the window.
    assert bursts.record("robocaller", 569.0, 60) == 61
    assert bursts.record("robocaller", 600.0, 60) == 61  # 541..599, 569 and this one


def test_flood_windows_forget_quiet_lines() -> None:
    floods = FloodCounter()
    for i in range(FloodCounter.MAX_LINES * 3):
        floods.record(f"line{i}", "caller", float(i), 60)
    assert len(floods) <= FloodCounter.MAX_LINES
    assert floods.record("line-new", "caller", 10_000.0, 60) == 1


# --- review fixes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "default_region", "own", "e164", "region"),
    [
        # A North American line delivered as 10 digits, agent default FR: not Australia.
        ("6175550100", "FR", {"+16175550100"}, "+16175550100", "US"),
        ("16175550100", "FR", {"+16175550100"}, "+16175550100", "US"),
        ("0142000001", "FR", {"+33142000001", "+16175550100"}, "+33142000001", "FR"),
        ("0142000001", "US", {"+33142000001"}, "+33142000001", "FR"),
        ("142000001", "FR", {"+33142000001"}, "+33142000001", "FR"),
        # Not ours: a valid reading beats a merely possible one.
        ("+442079460123", "FR", set(), "+442079460123", "GB"),
        ("33144556677", "US", set(), "+33144556677", "FR"),
    ],
)
def test_the_dialled_line_is_read_against_our_own_numbers_first(
    dialled: str, default_region: str, own: set[str], e164: str, region: str
) -> None:
    line = read_dialled(dialled, default_region, frozenset(own))
    assert (line.e164, line.region) == (e164, region)


def test_callers_on_a_ten_digit_us_line_are_read_as_north_american() -> None:
    own = frozenset({"+16175550100"})
    line = read_dialled("6175550100", "FR", own)
    spoof = classify_caller("6175550100", 0, line.region)
    assert spoof.e164 == "+16175550100"
    decision = evaluate(
        CallFacts(
            caller=spoof, line=line, attestation=parse_attestation(""), own_number=spoof.e164 in own
        ),
        ScreeningConfig(),
    )
    assert decision.verdict == "block" and "own_number" in decision.reasons
    patient = classify_caller("2125550123", 0, line.region)
    assert (patient.e164, patient.status, patient.region) == ("+12125550123", "valid", "US")


@pytest.mark.parametrize(
    ("raw", "dialled", "e164"),
    [
        # International digits without '+' that a variable-length plan also reads nationally.
        ("4915112345678", "+493012345678", "+4915112345678"),
        ("390612345678", "+390612345678", "+390612345678"),
        ("33612345678", "+390612345678", "+33612345678"),
        # National numbers without a trunk prefix are still read nationally.
        ("2125550123", "+16175550100", "+12125550123"),
        ("3471234567", "+390612345678", "+393471234567"),
        ("612345678", "+33142000001", "+33612345678"),
    ],
)
def test_international_digits_without_plus_are_read_internationally(
    raw: str, dialled: str, e164: str
) -> None:
    line = read_dialled(dialled, "FR")
    caller = classify_caller(raw, 0, line.region)
    assert (caller.e164, caller.status) == (e164, "valid")


def test_the_carriers_verstat_is_the_last_one_in_a_header() -> None:
    for header in (
        '"verstat=TN-Validation-Passed-A" '
        "<sip:+33612345678@ims.example;user=phone;verstat=TN-Validation-Failed>",
        "<sip:verstat=TN-Validation-Passed-A@ims.example;user=phone;verstat=TN-Validation-Failed>",
    ):
        assert parse_attestation(header) is Attestation.FAILED


@pytest.mark.parametrize(
    ("entry", "number"),
    [
        ("+33 (0)6*", "+33612345678"),
        ("+44 (0)7911*", "+447911123456"),
        ("+33 (0)6 12 34 56 78", "+33612345678"),
    ],
)
def test_a_trunk_zero_in_brackets_is_dropped_from_entries(entry: str, number: str) -> None:
    assert ListMatcher.of([normalise_entry(entry)]).match(number) is not None


def test_no_callback_credit_for_a_blocklisted_number_or_our_own() -> None:
    blocked = evaluate(
        facts("+33612345678", "", blocklisted="+33612345678", callback=True), ScreeningConfig()
    )
    assert blocked.verdict == "block" and "callback" not in blocked.reasons
    assert next(r for r in blocked.rules if r.code == "callback").points == 0
    spoof = evaluate(facts("+33142000001", "", own_number=True, callback=True), ScreeningConfig())
    assert spoof.verdict == "block" and "callback" not in spoof.reasons
    patient = evaluate(facts("0899123456", "", callback=True), ScreeningConfig())
    assert "callback" in patient.reasons


def test_the_caller_cache_keeps_few_plain_numbers() -> None:
    # Each entry holds a plain caller number: the cache must stay small.
    maxsize = _classify_cached.cache_info().maxsize
    assert maxsize is not None and maxsize <= 1024
    for i in range(3000):
        classify_caller(f"06{i:08d}", 0, "FR")
    assert _classify_cached.cache_info().currsize <= 1024


def test_flood_lines_are_capped_even_when_every_line_is_busy() -> None:
    floods = FloodCounter()
    for i in range(5 * FloodCounter.MAX_LINES):
        floods.record(f"line{i}", "caller", 100.0 + i * 0.001, 60)
    assert len(floods._lines) == FloodCounter.MAX_LINES
    # The newest lines are kept, the one whose newest call is oldest went first.
    assert f"line{5 * FloodCounter.MAX_LINES - 1}" in floods._lines
    assert "line0" not in floods._lines


@pytest.mark.parametrize(
    ("attestation", "verify_result", "expected"),
    [
        ("A", "", Attestation.A),  # the 2-argument dialplan
        ("A", "Verification passed", Attestation.A),
        ("B", "success", Attestation.B),
        ("A", "Signature verification failed", Attestation.FAILED),
        ("A", "Verification mismatch", Attestation.FAILED),
        ("A", "Verification not present", Attestation.MISSING),
        ("A", "internal_error", Attestation.MISSING),
        ("", "Verification passed", Attestation.PASSED),
        ("", "Verification failed", Attestation.FAILED),
    ],
)
def test_attestation_counts_only_when_the_verification_passed(
    attestation: str, verify_result: str, expected: Attestation
) -> None:
    got = combine_verify_result(parse_attestation(attestation), verify_result)
    assert got is expected
