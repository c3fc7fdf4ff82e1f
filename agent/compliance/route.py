"""The outbound FastAGI route with compliance in front: windows, attempt limits, opt-outs.

Wraps the outbound route (agent.agi.outbound.OutboundRoute): a call the rules stop never
reaches number selection; the dialplan gets ``TRUSTLINE_STATUS`` = outside_window |
attempts_exceeded | opted_out (no caller ID, so the subroutine does not dial) and, outside a
window, ``TRUSTLINE_NEXT_WINDOW`` (a variable of its own, also when the request asked for
the packed ``?answer=one`` reply). Refusals are audited through the outbound service like any
call. A call an attempt limit lets through counts from the check on, and is released when it
does not go out. On a deadline the checks that need no I/O hold (window, opt-out, and the
attempt limit when memory can tell; else the call waits). No policy here.
"""

from __future__ import annotations

from agent import contract
from agent.agi.routing import AgiAnswer, AgiRequest, wants_one_variable
from agent.compliance.policy import Verdict
from agent.compliance.service import ComplianceService
from agent.outbound.route import OutboundRoute, answer_for
from agent.outbound.service import Decision, OutboundService

VAR_NEXT_WINDOW = "TRUSTLINE_NEXT_WINDOW"
# The decisions that let a call out, hence count as an attempt (any other releases it).
_DIALLED = frozenset({contract.STATUS_OK, contract.STATUS_EXHAUSTED, contract.STATUS_FALLBACK})


class ComplianceRoute:
    name = contract.ROUTE_OUTBOUND

    def __init__(
        self, inner: OutboundRoute, compliance: ComplianceService, outbound: OutboundService
    ) -> None:
        self._inner = inner
        self._compliance = compliance
        self._outbound = outbound

    def _refuse(self, request: AgiRequest, verdict: Verdict) -> AgiAnswer:
        purpose, callee, case_ref = OutboundRoute.args(request)
        pool = self._outbound.config.pool_for(purpose)
        decision = Decision(verdict.status, verdict.reason, pool.name if pool else None)
        self._outbound.record_failure(request.uniqueid, purpose, decision, callee, case_ref)
        answer = answer_for(decision)
        if wants_one_variable(request):  # ?answer=one: the packed answer, as the inner route
            answer = answer.packed(contract.OUTBOUND_ANSWER_FIELDS)
        # The next window is a variable of its own, in both modes (only on this refusal).
        extra = ((VAR_NEXT_WINDOW, verdict.next_window),) if verdict.next_window else ()
        return AgiAnswer(answer.variables + extra, outcome=answer.outcome)

    async def handle(self, request: AgiRequest) -> AgiAnswer:
        args = OutboundRoute.args(request)
        purpose, callee, _ = args
        uniqueid = request.uniqueid
        verdict = await self._compliance.check(purpose, callee, uniqueid)  # counted if allowed
        if not verdict.allowed:
            return self._refuse(request, verdict)
        try:
            answer = await self._inner.handle_args(request, args)
        except BaseException:  # a deadline or a fault: on_failure decides the call again
            self._compliance.release(purpose, callee, uniqueid)
            raise
        if answer.outcome not in _DIALLED:
            self._compliance.release(purpose, callee, uniqueid)
        return answer

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        purpose, callee, _ = OutboundRoute.args(request)
        verdict = self._compliance.check_offline(purpose, callee, request.uniqueid)
        if not verdict.allowed:
            return self._refuse(request, verdict)
        answer = self._inner.on_failure(request, reason)
        if answer.outcome not in _DIALLED:
            self._compliance.release(purpose, callee, request.uniqueid)
        return answer
