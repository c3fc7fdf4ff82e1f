"""The auditor's export: every call (refused ones too), admin action and recording access in a
period, as CSV (a header row with named columns) or JSON lines.

Never a patient's number: calls carry the callee's keyed hash; free text (reasons, details,
operators) has any run of 7+ digits masked to its last 4, in case a number slipped into it.
The number used is the caller ID we presented (ours). No I/O besides the store reads and the
stream it is given.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any
from zoneinfo import ZoneInfo

from agent import phone
from agent.compliance.repo import ComplianceRepo

COLUMNS = (
    "kind",  # call | admin | recording_access
    "time",  # ISO 8601 in the centre's time zone
    "purpose",
    "case_ref",
    "pool",
    "number_used",  # our caller ID
    "status",
    "reason",
    "outcome",
    "callee_hash",
    "actor",
    "action",
    "target",
    "detail",
)
_DIGITS = re.compile(r"(?<![0-9A-Za-z])\+?\d[\d .()/-]{5,}\d(?![0-9A-Za-z])")


def scrub(text: Any) -> str:
    """Free text with every phone-number-like digit run masked (last 4 digits kept)."""
    if text is None:
        return ""
    return _DIGITS.sub(lambda m: phone.mask(m.group(0)), str(text))


async def export_rows(
    repo: ComplianceRepo, since: float, until: float, zone: ZoneInfo
) -> list[dict[str, str]]:
    def when(at: float) -> str:
        return datetime.fromtimestamp(at, zone).isoformat(timespec="seconds")

    out: list[tuple[float, dict[str, str]]] = []
    for (
        at,
        purpose,
        case_ref,
        pool,
        number,
        status,
        reason,
        outcome,
        callee,
    ) in await repo.calls_between(since, until):
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            kind="call", time=when(at), purpose=purpose or "", case_ref=scrub(case_ref),
            pool=pool or "", number_used=number or "", status=status, reason=scrub(reason),
            outcome=outcome or "", callee_hash=callee or "",
        )  # fmt: skip
        out.append((at, row))
    for at, actor, action, target, detail in await repo.admin_between(since, until):
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            kind="admin", time=when(at), actor=scrub(actor), action=action,
            target=scrub(target), detail=scrub(detail),
        )  # fmt: skip
        out.append((at, row))
    for at, operator, action, rec_id, reason, outcome in await repo.recording_access_between(
        since, until
    ):
        row = dict.fromkeys(COLUMNS, "")
        row.update(
            kind="recording_access", time=when(at), actor=scrub(operator), action=action,
            target=f"recording {rec_id}", reason=scrub(reason), outcome=scrub(outcome),
        )  # fmt: skip
        out.append((at, row))
    out.sort(key=lambda item: item[0])
    return [row for _, row in out]


def write_csv(rows: Iterable[dict[str, str]], stream: IO[str]) -> None:
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_jsonl(rows: Iterable[dict[str, str]], stream: IO[str]) -> None:
    for row in rows:
        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
