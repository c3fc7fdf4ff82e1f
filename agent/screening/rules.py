"""Screening rules: facts about one inbound call in, points, reason codes and a verdict out.

Pure: no I/O, no clock, no logging, no store. The service gathers the facts (lists, windows,
callback look-up) and agent.screening.callers reads the caller ID and the dialled line; this
module only adds points, so the CLI can explain any decision rule by rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from phonenumbers import PhoneNumberType

from agent import contract
from agent.screening.callers import (
    Attestation,
    Caller,
    Line,
    NumberStatus,
    classify_caller,
    combine_verify_result,
    parse_attestation,
    read_dialled,
)
from agent.screening.config import ScreeningConfig, ScreeningThresholds

# The service reads the call through this module: one name to import for the whole decision.
__all__ = [
    "REASON_ALLOWLIST",
    "REASON_DISABLED",
    "REASON_FAILURE",
    "Attestation",
    "CallFacts",
    "Caller",
    "Decision",
    "Line",
    "NumberStatus",
    "RuleResult",
    "allow_decision",
    "classify_caller",
    "combine_verify_result",
    "evaluate",
    "parse_attestation",
    "read_dialled",
    "verdict_for",
]

# Reason codes that are not weights.
REASON_ALLOWLIST = "allowlist"
REASON_DISABLED = "screening_disabled"
REASON_FAILURE = "screening_unavailable"


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True, slots=True)
class CallFacts:
    caller: Caller
    line: Line
    attestation: Attestation
    allowlisted: str | None = None  # the matching entry
    blocklisted: str | None = None
    own_number: bool = False
    burst_calls: int | None = None  # calls from this caller in the window; None = not known
    flood_callers: int | None = None  # distinct callers to this line in the window
    callback: bool | None = None  # we called this number recently; None = not looked up


@dataclass(frozen=True, slots=True)
class RuleResult:
    code: str
    weight: int
    fired: bool
    detail: str

    @property
    def points(self) -> int:
        return self.weight if self.fired else 0


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: str
    score: int
    reasons: tuple[str, ...]  # codes of the rules that fired, in evaluation order
    # Every rule evaluated, fired or not, with a sentence each: only when explaining.
    rules: tuple[RuleResult, ...]
    attestation: Attestation

    @property
    def reasons_text(self) -> str:
        return ",".join(self.reasons)


def verdict_for(score: int, thresholds: ScreeningThresholds) -> str:
    if score >= thresholds.block:
        return contract.VERDICT_BLOCK
    if score >= thresholds.voicemail:
        return contract.VERDICT_VOICEMAIL
    if score >= thresholds.challenge:
        return contract.VERDICT_CHALLENGE
    return contract.VERDICT_ALLOW


def allow_decision(reason: str, attestation: Attestation = Attestation.MISSING) -> Decision:
    """An allow that skips scoring (allow list, screening off, failure policy)."""
    rule = RuleResult(reason, 0, True, "scoring skipped")
    return Decision(contract.VERDICT_ALLOW, 0, (reason,), (rule,), attestation)


def evaluate(facts: CallFacts, config: ScreeningConfig, *, explain: bool = True) -> Decision:
    """Every rule, its points, the clamped total and the verdict.

    ``explain=False`` leaves ``rules`` empty: the live path needs only the verdict, score and
    reasons, and building eleven explained rows per call is measurable.
    """
    if not config.enabled:
        return allow_decision(REASON_DISABLED, facts.attestation)
    if facts.allowlisted is not None:
        rule = RuleResult(REASON_ALLOWLIST, 0, True, f"matches {facts.allowlisted}")
        return Decision(contract.VERDICT_ALLOW, 0, (REASON_ALLOWLIST,), (rule,), facts.attestation)
    w = config.weights
    win = config.windows
    caller = facts.caller
    valid = caller.status == NumberStatus.VALID
    fired = (
        ("blocklist", w.blocklist, facts.blocklisted is not None),
        ("withheld", w.withheld, caller.withheld),
        (
            "invalid_number",
            w.invalid_number,
            caller.status in (NumberStatus.IMPOSSIBLE, NumberStatus.INVALID),
        ),
        ("own_number", w.own_number, facts.own_number),
        ("premium_rate", w.premium_rate, valid and caller.number_type == _PREMIUM),
        ("toll_free", w.toll_free, valid and caller.number_type == _TOLL_FREE),
        ("international", w.international, valid and caller.region != facts.line.region),
        (facts.attestation.reason, getattr(w, facts.attestation.reason), True),
        (
            "burst",
            w.burst,
            facts.burst_calls is not None and facts.burst_calls >= win.burst_calls,
        ),
        (
            "flood",
            w.flood,
            facts.flood_callers is not None and facts.flood_callers >= win.flood_callers,
        ),
        # A callback vouches for a number we called, not for one that is block-listed or
        # ours: no credit then, or -40 would pull a block down to voicemail or challenge.
        (
            "callback",
            w.callback,
            bool(facts.callback) and facts.blocklisted is None and not facts.own_number,
        ),
    )
    total = 0
    reasons = []
    for code, weight, hit in fired:
        if hit:
            total += weight
            reasons.append(code)
    score = max(0, min(100, total))
    results: tuple[RuleResult, ...] = ()
    if explain:
        details = _details(facts, config)
        results = tuple(RuleResult(code, weight, hit, details[code]) for code, weight, hit in fired)
    return Decision(
        verdict_for(score, config.thresholds), score, tuple(reasons), results, facts.attestation
    )


_PREMIUM = PhoneNumberType.PREMIUM_RATE
_TOLL_FREE = PhoneNumberType.TOLL_FREE


def _details(facts: CallFacts, config: ScreeningConfig) -> dict[str, str]:
    """One sentence per rule, for `trustline screen`."""
    caller = facts.caller
    win = config.windows
    if caller.status == NumberStatus.ABSENT:
        withheld = "no caller number"
    else:
        withheld = "presentation restricted" if caller.withheld else "caller number shown"
    if facts.callback is None:
        callback = "not looked up"
    elif facts.callback:
        callback = f"we called this number in the last {config.callback_days:g} days"
        if facts.blocklisted is not None or facts.own_number:
            callback += " (no credit: block-listed or one of ours)"
    else:
        callback = "no recent call to this number"
    kind = (
        f"type {PhoneNumberType.to_string(caller.number_type).lower()}"
        if caller.number_type is not None
        else "type unknown"
    )
    return {
        "blocklist": f"matches {facts.blocklisted}" if facts.blocklisted else "not listed",
        "withheld": withheld,
        "invalid_number": f"number is {caller.status}",
        "own_number": "presents one of our numbers" if facts.own_number else "not one of ours",
        "premium_rate": kind,
        "toll_free": kind,
        "international": f"caller region {caller.region or '-'}, line region {facts.line.region}",
        facts.attestation.reason: f"STIR/SHAKEN {facts.attestation.value}",
        "burst": _window_detail(
            facts.burst_calls, win.burst_calls, f"calls from this caller in {win.burst_seconds:g}s"
        ),
        "flood": _window_detail(
            facts.flood_callers,
            win.flood_callers,
            f"distinct callers to this line in {win.flood_seconds:g}s",
        ),
        "callback": callback,
    }


def _window_detail(count: int | None, limit: int, what: str) -> str:
    if count is None:
        return "not counted (live agent only)"
    return f"{count} {what} (limit {limit})"
