"""The ``inbound`` FastAGI route.

AGI(agi://host:4573/inbound,<dialled>,<attestation|verstat>,<verify_result>,<caller>).

Translates the request into ScreeningService.screen and the Decision into TRUSTLINE_VERDICT,
TRUSTLINE_SCORE and TRUSTLINE_REASONS. The caller screened is the fourth argument, which the
subroutine filters to digits and '+' (``${FILTER(0-9+,${CALLERID(num)})}``): a header can be
forged by a line break in the caller's name, an argument cannot. Only a dialplan of an older
release (three arguments) falls back to the ``agi_callerid`` header, which is read first-wins.
Failure policy: allow with a reason; never hang up, never block on a fault.
"""

from __future__ import annotations

import re

from agent import contract
from agent.agi.routing import AgiAnswer, AgiRequest, wants_one_variable
from agent.screening.rules import REASON_FAILURE, Decision
from agent.screening.service import InboundCall, ScreeningService

_REASON_CODE = re.compile(r"[^a-z0-9_]")


def answer_for(decision: Decision) -> AgiAnswer:
    return AgiAnswer(
        (
            (contract.VAR_VERDICT, decision.verdict),
            (contract.VAR_SCORE, str(decision.score)),
            (contract.VAR_REASONS, decision.reasons_text),
        ),
        outcome=decision.verdict,
    )


def inbound_call(request: AgiRequest) -> InboundCall:
    """The call as the dialplan described it; the query string is accepted as well."""
    dialled = request.arg(1) or request.query.get("dialled", "")
    if not dialled.strip():
        # Without an argument, the extension the call reached is the best we have.
        dnid = request.env.get("agi_dnid", "")
        dialled = dnid if dnid and dnid != "unknown" else request.env.get("agi_extension", "")
    attestation = (
        request.arg(2) or request.query.get("attestation", "") or request.query.get("verstat", "")
    )
    verify_result = request.arg(3) or request.query.get("verify_result", "")
    # Present (even empty: a withheld number filters to "") whenever the subroutine passed it.
    caller = request.arg(4) if len(request.args) >= 4 else request.callerid
    return InboundCall(
        caller=caller,
        dialled=dialled,
        attestation=attestation,
        callingpres=request.callingpres,
        uniqueid=request.uniqueid,
        verify_result=verify_result,
    )


class InboundRoute:
    name = contract.ROUTE_INBOUND

    def __init__(self, service: ScreeningService) -> None:
        self._service = service

    async def handle(self, request: AgiRequest) -> AgiAnswer:
        return _reply(request, answer_for(await self._service.screen(inbound_call(request))))

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        # Screening is a filter in front of patients: when it cannot decide, the call goes
        # through, and the reasons say why nobody screened it.
        code = _REASON_CODE.sub("_", reason.lower())[:32] or "unknown"
        answer = AgiAnswer(
            (
                (contract.VAR_VERDICT, contract.VERDICT_ALLOW),
                (contract.VAR_SCORE, "0"),
                (contract.VAR_REASONS, f"{REASON_FAILURE},{code}"),
            ),
            outcome=f"{contract.VERDICT_ALLOW}:{REASON_FAILURE}",
        )
        return _reply(request, answer)


def _reply(request: AgiRequest, answer: AgiAnswer) -> AgiAnswer:
    if wants_one_variable(request):
        return answer.packed(contract.INBOUND_ANSWER_FIELDS)
    return answer
