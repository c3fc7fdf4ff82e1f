"""Turn AMI events into facts the agent acts on: call ended, CDR seen, recording complete,
spam reported. Pure: no I/O, no logging of numbers; the link performs the effects.

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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.contract import VAR_POOL, VAR_STATUS

# DialEnd.DialStatus -> the outcome we store. Anything else is "failed".
DIAL_OUTCOMES: Mapping[str, str] = {
    "ANSWER": "answered",
    "BUSY": "busy",
    "NOANSWER": "no_answer",
    "CANCEL": "cancelled",
    "CONGESTION": "congestion",
    "CHANUNAVAIL": "unavailable",
}
# The call ended without a DialEnd on our channel (hung up during the AGI, or never dialled).
OUTCOME_NOT_DIALLED = "not_dialled"
# The call ended while the AMI link was down; we do not know how.
OUTCOME_UNKNOWN = "unknown"
OUTCOMES = (*DIAL_OUTCOMES.values(), "failed", OUTCOME_NOT_DIALLED, OUTCOME_UNKNOWN)

RECORDING_VARIABLE = "MIXMONITOR_FILENAME"
SPAM_USEREVENT = "SpamReport"
# VarSet of these (non-empty) on a channel: the agent chose that call's caller ID.
OURS_VARIABLES = frozenset({VAR_STATUS, VAR_POOL})
_SOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True, slots=True)
class CallEnded:
    uniqueid: str
    linkedid: str
    outcome: str
    dial_status: str | None
    hangup_cause: int | None
    talk_seconds: int
    ended_at: float


@dataclass(frozen=True, slots=True)
class CdrSeen:
    uniqueid: str
    disposition: str
    billable_seconds: int


@dataclass(frozen=True, slots=True)
class RecordingComplete:
    uniqueid: str
    filename: str


@dataclass(frozen=True, slots=True)
class SpamReported:
    number: str
    source: str
    uniqueid: str


Effect = CallEnded | CdrSeen | RecordingComplete | SpamReported


class _Call:
    __slots__ = ("answered_at", "billable", "dial_status", "linkedid", "started_at")

    def __init__(self, linkedid: str, now: float) -> None:
        self.linkedid = linkedid
        self.started_at = now
        self.dial_status: str | None = None
        self.answered_at: float | None = None
        self.billable: int | None = None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def clean_source(value: str) -> str:
    """Report source as a short label (ivr, agent, ...): it becomes a metric label and a row."""
    label = value.strip().lower()[:16]
    return label if label and set(label) <= _SOURCE_CHARS else "other"


class CallTracker:
    """State of our calls in progress, bounded; ``feed`` returns the effects of one event."""

    def __init__(self, *, max_calls: int = 50_000, late_cdr_memory: int = 10_000) -> None:
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._ended: OrderedDict[str, None] = OrderedDict()
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

    def track(self, uniqueid: str, linkedid: str, now: float) -> None:
        if uniqueid in self._calls or not uniqueid:
            return
        self._calls[uniqueid] = _Call(linkedid or uniqueid, now)
        if len(self._calls) > self._max_calls:
            # Only a PBX that lost Hangup events gets here; the oldest entry is the stalest.
            self._calls.popitem(last=False)
            self.evicted += 1

    # -- handlers --------------------------------------------------------------------------

    def _varset(self, event: Mapping[str, str], now: float) -> list[Effect]:
        variable = event.get("Variable", "")
        if variable in OURS_VARIABLES:
            if event.get("Value"):
                self.track(event.get("Uniqueid", ""), event.get("Linkedid", ""), now)
        elif variable == RECORDING_VARIABLE:
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
            effects.append(self._ended_effect(uniqueid, call, _int(event.get("Cause")), now))
        return effects

    def _ended_effect(self, uniqueid: str, call: _Call, cause: int | None, now: float) -> CallEnded:
        if call.dial_status is None:
            outcome = OUTCOME_NOT_DIALLED
        else:
            outcome = DIAL_OUTCOMES.get(call.dial_status, "failed")
        if call.billable is not None:
            talk = call.billable
        elif call.answered_at is not None:
            talk = max(0, round(now - call.answered_at))
        else:
            talk = 0
        self._ended[uniqueid] = None
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
        if call is not None:
            call.billable = billable
        return [CdrSeen(uniqueid, event.get("Disposition", ""), billable)]

    def _userevent(self, event: Mapping[str, str], now: float) -> list[Effect]:
        if event.get("UserEvent") != SPAM_USEREVENT:
            return []
        number = event.get("Number", "").strip()
        if not number or len(number) > 32:
            return []
        source = clean_source(event.get("Source", ""))
        return [SpamReported(number, source, event.get("Uniqueid", ""))]

    # -- re-sync after a gap in the event stream -------------------------------------------

    def resync(self, live: Mapping[str, str], now: float) -> list[Effect]:
        """``live`` = Uniqueid -> Linkedid of the channels Asterisk has now (CoreShowChannels).

        Tracked calls and recordings whose channel is gone ended while we were not listening:
        close them with what we know (an outcome seen before the gap, else unknown).
        """
        effects: list[Effect] = []
        for uniqueid in [u for u in self._recordings if u not in live]:
            effects.extend(RecordingComplete(uniqueid, f) for f in self._recordings.pop(uniqueid))
        for uniqueid in [u for u in self._calls if u not in live]:
            call = self._calls.pop(uniqueid)
            ended = self._ended_effect(uniqueid, call, None, now)
            if call.dial_status is None:
                ended = CallEnded(uniqueid, call.linkedid, OUTCOME_UNKNOWN, None, None, 0, now)
            effects.append(ended)
        return effects

    def adopt(self, rows: Iterable[tuple[str, str]], now: float) -> None:
        """Track calls the store knows (uniqueid, linkedid) that are still live on the PBX."""
        for uniqueid, linkedid in rows:
            self.track(uniqueid, linkedid, now)
