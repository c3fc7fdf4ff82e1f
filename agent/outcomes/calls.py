"""Turn AMI events into facts the agent acts on: call ended, CDR seen, recording complete,
spam reported, screening outcome, call not dialled. Pure: no I/O, no logging of numbers; the
AMI link feeds events in, and hands the facts to agent.outcomes.intake, which acts on them.
Every name read from an event that the dialplan chose (variables, UserEvents and their
fields) comes from agent.contract.

Which calls are ours: the FastAGI route answers with ``SET VARIABLE TRUSTLINE_STATUS`` /
``TRUSTLINE_POOL``, and Asterisk reports each as a ``VarSet`` on that channel (see
ami-answered.jsonl). That channel's Uniqueid is the ``agi_uniqueid`` on our call_audit row,
so we start tracking it there; every other channel is ignored with one dict lookup.

The outcome comes from the ``DialEnd`` *on our channel* (its ``Uniqueid``): the Originate leg
of the same Linkedid raises its own DialEnd (no ``Uniqueid``, often ``NOANSWER``) which must
not count. The call ends at our channel's ``Hangup``; a ``Cdr`` (BillableSeconds) may come just
before or just after it (both orders are in the captures), so ended calls are remembered for a
while to take a late Cdr. MixMonitor raises no stop event on hangup, so a recording is complete
when the ``Hangup`` of the channel that set ``MIXMONITOR_FILENAME`` arrives.

Gaps: while the link is down, events are lost. Calls the re-sync adopts from the store or
keeps alive carry a gap flag: their missing DialEnd may have been lost rather than never
raised, so at Hangup their outcome comes from the Cdr when one was seen (its Disposition, or
"not dialled" when it names no DestinationChannel; a late Cdr still settles it), else it is
unknown; the outage is never counted as talk time. A call has one Cdr per bridge segment
(transfers): their billable seconds add up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.contract import (
    NOT_DIALLED_FIELD_STATUS,
    NOT_DIALLED_STATUSES,
    OURS_VARIABLES,
    SCREENING_FIELD_OUTCOME,
    SCREENING_FIELD_SCORE,
    SCREENING_FIELD_TRIES,
    SCREENING_FIELD_VERDICT,
    SCREENING_OUTCOMES,
    SPAM_FIELD_NUMBER,
    SPAM_FIELD_SOURCE,
    USEREVENT_NOT_DIALLED,
    USEREVENT_SCREENING,
    USEREVENT_SPAM,
    VAR_MIXMONITOR_FILENAME,
    VERDICTS,
)

# DialEnd.DialStatus -> the outcome we store. Anything else is "failed".
DIAL_OUTCOMES: Mapping[str, str] = {
    "ANSWER": "answered",
    "BUSY": "busy",
    "NOANSWER": "no_answer",
    "CANCEL": "cancelled",
    "CONGESTION": "congestion",
    "CHANUNAVAIL": "unavailable",
}
# Our side hung up while the callee's phone rang: it says nothing about the number.
OUTCOME_CANCELLED = DIAL_OUTCOMES["CANCEL"]
# Cdr.Disposition -> outcome, for a call whose DialEnd we may have missed (AMI gap).
CDR_OUTCOMES: Mapping[str, str] = {
    "ANSWERED": "answered",
    "NO ANSWER": "no_answer",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "congestion",
}
# The call ended without a DialEnd on our channel (hung up during the AGI, or never dialled).
OUTCOME_NOT_DIALLED = "not_dialled"
# The call ended while the AMI link was down; we do not know how.
OUTCOME_UNKNOWN = "unknown"
OUTCOMES = (*DIAL_OUTCOMES.values(), "failed", OUTCOME_NOT_DIALLED, OUTCOME_UNKNOWN)

_SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class CallEnded:
    uniqueid: str
    linkedid: str
    outcome: str
    dial_status: str | None
    hangup_cause: int | None
    talk_seconds: int | None  # None: not known (ended during an AMI gap, no Cdr seen)
    ended_at: float


@dataclass(frozen=True, slots=True)
class CdrSeen:
    uniqueid: str
    disposition: str
    billable_seconds: int
    # Set when this late Cdr tells how a call that ended in an AMI gap went (its CallEnded
    # said "unknown"): the store replaces an unknown outcome with it.
    settles: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingComplete:
    uniqueid: str
    filename: str


@dataclass(frozen=True, slots=True)
class SpamReported:
    number: str
    source: str
    uniqueid: str


@dataclass(frozen=True, slots=True)
class ScreeningOutcome:
    """What became of a screened inbound call (UserEvent TrustlineScreening): code words
    only, anything else is "other"; no number."""

    verdict: str
    outcome: str
    score: int | None
    tries: int | None


@dataclass(frozen=True, slots=True)
class NotDialled:
    """The dialplan did not dial a call on a compliance refusal (UserEvent
    TrustlineNotDialled); ``status`` a code word, anything else "other"."""

    status: str


Effect = CallEnded | CdrSeen | RecordingComplete | SpamReported | ScreeningOutcome | NotDialled


class _Call:
    __slots__ = (
        "answered_at",
        "billable",
        "cdr_outcome",
        "dial_status",
        "gap",
        "linkedid",
        "started_at",
    )

    def __init__(self, linkedid: str, now: float, *, gap: bool = False) -> None:
        self.linkedid = linkedid
        self.started_at = now
        self.dial_status: str | None = None
        self.answered_at: float | None = None
        self.billable: int | None = None  # sum over the call's Cdrs (one per bridge segment)
        self.cdr_outcome: str | None = None  # what its Cdrs say of the callee's side
        # Events of this call may have been lost (adopted or kept alive by a re-sync).
        self.gap = gap


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _cdr_outcome(event: Mapping[str, str]) -> str | None:
    """What one Cdr says of the callee's side. A Cdr with no DestinationChannel had no callee
    leg: its ANSWERED is our own channel being answered (ami-hangup-during-agi.jsonl: hung up
    in the AGI, "ANSWERED", 1 s), so it says "not dialled"."""
    if not event.get("DestinationChannel"):
        return OUTCOME_NOT_DIALLED
    return CDR_OUTCOMES.get(event.get("Disposition", ""))


def _rank(outcome: str | None) -> int:
    """Among a call's Cdrs (one per bridge segment): an answer wins, any dial beats none."""
    if outcome is None:
        return -1
    return {"answered": 2, OUTCOME_NOT_DIALLED: 0}.get(outcome, 1)


def clean_source(value: str) -> str:
    """Report source as a short label (ivr, agent, ...): it becomes a metric label and a row."""
    label = value.strip().lower()[:16]
    return label if label and set(label) <= _SOURCE_CHARS else "other"


class CallTracker:
    """State of our calls in progress, bounded; ``feed`` returns the effects of one event."""

    def __init__(self, *, max_calls: int = 50_000, late_cdr_memory: int = 10_000) -> None:
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        # Ended calls that may still get a late Cdr -> True when it would settle the outcome.
        self._ended: OrderedDict[str, bool] = OrderedDict()
        self._recordings: dict[str, list[str]] = {}
        self._max_calls = max_calls
        self._late = late_cdr_memory
        self.evicted = 0
        self._handlers = {
            "VarSet": self._varset,
            "DialEnd": self._dialend,
            "Hangup": self._hangup,
            "Cdr": self._cdr,
            "UserEvent": self._userevent,
        }

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    @property
    def recordings_in_progress(self) -> int:
        return len(self._recordings)

    def tracked(self) -> dict[str, str]:
        """Uniqueid -> Linkedid of every call in progress."""
        return {uid: call.linkedid for uid, call in self._calls.items()}

    def feed(self, event: Mapping[str, str], now: float) -> list[Effect]:
        handler = self._handlers.get(event.get("Event", ""))
        if handler is None:
            return []
        return handler(event, now)

    def track(self, uniqueid: str, linkedid: str, now: float, *, gap: bool = False) -> bool:
        """Start tracking one of our calls; False when already tracked (or no uniqueid)."""
        if uniqueid in self._calls or not uniqueid:
            return False
        self._calls[uniqueid] = _Call(linkedid or uniqueid, now, gap=gap)
        if len(self._calls) > self._max_calls:
            # Only a PBX that lost Hangup events gets here; the oldest entry is the stalest.
            self._calls.popitem(last=False)
            self.evicted += 1
        return True

    # -- handlers --------------------------------------------------------------------------

    def _varset(self, event: Mapping[str, str], now: float) -> list[Effect]:
        variable = event.get("Variable", "")
        if variable in OURS_VARIABLES:
            if event.get("Value"):
                self.track(event.get("Uniqueid", ""), event.get("Linkedid", ""), now)
        elif variable == VAR_MIXMONITOR_FILENAME:
            uniqueid, filename = event.get("Uniqueid", ""), event.get("Value", "")
            if uniqueid and filename:
                files = self._recordings.setdefault(uniqueid, [])
                if filename not in files:
                    files.append(filename)
        return []

    def _dialend(self, event: Mapping[str, str], now: float) -> list[Effect]:
        call = self._calls.get(event.get("Uniqueid", ""))
        if call is not None:
            status = event.get("DialStatus", "")
            # Dial(A&B) raises one DialEnd per destination: an ANSWER from any of them wins.
            if call.dial_status != "ANSWER":
                call.dial_status = status
                if status == "ANSWER":
                    call.answered_at = now
        return []

    def _hangup(self, event: Mapping[str, str], now: float) -> list[Effect]:
        uniqueid = event.get("Uniqueid", "")
        effects: list[Effect] = []
        files = self._recordings.pop(uniqueid, None)
        if files:
            effects.extend(RecordingComplete(uniqueid, f) for f in files)
        call = self._calls.pop(uniqueid, None)
        if call is not None:
            cause = _int(event.get("Cause"))
            effects.append(self._ended_effect(uniqueid, call, cause, now, seen_live=True))
        return effects

    def _ended_effect(
        self, uniqueid: str, call: _Call, cause: int | None, now: float, *, seen_live: bool
    ) -> CallEnded:
        """``seen_live``: we saw the Hangup (False: the re-sync found the channel gone)."""
        if call.dial_status is not None:
            outcome = DIAL_OUTCOMES.get(call.dial_status, "failed")
        elif not call.gap:
            outcome = OUTCOME_NOT_DIALLED
        else:
            # Its DialEnd may have been raised while we were not listening.
            outcome = call.cdr_outcome or OUTCOME_UNKNOWN
        talk: int | None
        if call.billable is not None:
            talk = call.billable
        elif call.answered_at is not None and seen_live:
            # The channel was up from the answer to the Hangup we saw, gap or not.
            talk = max(0, round(now - call.answered_at))
        elif outcome in ("answered", OUTCOME_UNKNOWN):
            talk = None  # ended unseen: the outage is not talk time
        else:
            talk = 0
        self._ended[uniqueid] = outcome == OUTCOME_UNKNOWN
        if len(self._ended) > self._late:
            self._ended.popitem(last=False)
        return CallEnded(uniqueid, call.linkedid, outcome, call.dial_status, cause, talk, now)

    def _cdr(self, event: Mapping[str, str], now: float) -> list[Effect]:
        # The Cdr event spells it "UniqueID".
        uniqueid = event.get("UniqueID", "")
        call = self._calls.get(uniqueid)
        if call is None and uniqueid not in self._ended:
            return []
        billable = _int(event.get("BillableSeconds")) or 0
        told = _cdr_outcome(event)
        settles = None
        if call is not None:
            call.billable = (call.billable or 0) + billable
            if told is not None and _rank(told) >= _rank(call.cdr_outcome):
                call.cdr_outcome = told
        elif self._ended[uniqueid] and told is not None:
            settles = told
        return [CdrSeen(uniqueid, event.get("Disposition", ""), billable, settles)]

    def _userevent(self, event: Mapping[str, str], now: float) -> list[Effect]:
        name = event.get("UserEvent")
        if name == USEREVENT_SCREENING:
            verdict = event.get(SCREENING_FIELD_VERDICT, "")
            outcome = event.get(SCREENING_FIELD_OUTCOME, "")
            return [
                ScreeningOutcome(
                    verdict if verdict in VERDICTS else "other",
                    outcome if outcome in SCREENING_OUTCOMES else "other",
                    _int(event.get(SCREENING_FIELD_SCORE)),
                    _int(event.get(SCREENING_FIELD_TRIES)),
                )
            ]
        if name == USEREVENT_NOT_DIALLED:
            status = event.get(NOT_DIALLED_FIELD_STATUS, "")
            return [NotDialled(status if status in NOT_DIALLED_STATUSES else "other")]
        if name != USEREVENT_SPAM:
            return []
        number = event.get(SPAM_FIELD_NUMBER, "").strip()
        if not number or len(number) > 32:
            return []
        source = clean_source(event.get(SPAM_FIELD_SOURCE, ""))
        return [SpamReported(number, source, event.get("Uniqueid", ""))]

    # -- re-sync after a gap in the event stream -------------------------------------------

    def resync(self, live: Mapping[str, str], now: float) -> list[Effect]:
        """``live`` = Uniqueid -> Linkedid of the channels Asterisk has now (CoreShowChannels).

        Tracked calls and recordings whose channel is gone ended while we were not listening:
        close them with what we know (an outcome seen before the gap, else unknown; talk
        time only from a Cdr). Calls still live stay tracked, flagged as having a gap.
        """
        effects: list[Effect] = []
        for uniqueid in [u for u in self._recordings if u not in live]:
            effects.extend(RecordingComplete(uniqueid, f) for f in self._recordings.pop(uniqueid))
        for uniqueid, call in list(self._calls.items()):
            call.gap = True
            if uniqueid in live:
                call.linkedid = live[uniqueid] or call.linkedid
                continue
            del self._calls[uniqueid]
            effects.append(self._ended_effect(uniqueid, call, None, now, seen_live=False))
        return effects

    def adopt(self, rows: Iterable[tuple[str, str]], now: float) -> list[str]:
        """Start of a re-sync, before asking Asterisk which channels are live: track every
        call the store says is ours and unfinished (uniqueid, linkedid), so an event that
        arrives meanwhile lands on a tracked call. Every tracked call now has a gap.
        Returns the uniqueids tracked here for the first time."""
        for call in self._calls.values():
            call.gap = True
        return [
            uniqueid
            for uniqueid, linkedid in rows
            # An ended call whose outcome is not stored yet is not in progress.
            if uniqueid not in self._ended and self.track(uniqueid, linkedid, now, gap=True)
        ]

    def release(self, uniqueids: Iterable[str]) -> None:
        """Stop tracking calls adopted on the store's word alone (Asterisk would not say
        which channels are live): the next re-sync adopts them again."""
        for uniqueid in uniqueids:
            self._calls.pop(uniqueid, None)
