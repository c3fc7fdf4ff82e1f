"""The ``outbound`` FastAGI route:
AGI(agi://host:4573/outbound,<purpose>,<callee>[,<case_ref>[,area=<postal code|département>]]).

Translates the request into OutboundService.decide and the Decision into channel variables.
The callee is the second argument only (filtered to digits and '+' by the subroutine), never a
header. Failure policy: answer with the pool's fallback caller ID (status ``fallback``), or
with ``error`` and no caller ID when the purpose is unknown; never hang up the call. A call shed
under overload is answered without store work (not audited; counted in /metrics).
"""

from __future__ import annotations

import re

from agent import contract
from agent.agi.routing import AgiAnswer, AgiRequest, wants_one_variable
from agent.errors import BadRequest
from agent.outbound.service import Decision, OutboundService

_CASE_REF = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
_AREA = re.compile(r"area=([0-9A-Ba-b]{1,5})")  # a postal code or a département, nothing else


def _reply(request: AgiRequest, decision: Decision) -> AgiAnswer:
    answer = answer_for(decision)
    if wants_one_variable(request):
        return answer.packed(contract.OUTBOUND_ANSWER_FIELDS)
    return answer


def answer_for(decision: Decision) -> AgiAnswer:
    variables: list[tuple[str, str]] = []
    if decision.number:
        variables.append((contract.CALLERID_NUM, decision.number))
        if decision.name:
            variables.append((contract.CALLERID_NAME, decision.name))
    variables += [
        (contract.VAR_STATUS, decision.status),
        (contract.VAR_POOL, decision.pool or ""),
        (contract.VAR_REASON, decision.reason),
    ]
    return AgiAnswer(tuple(variables), outcome=decision.status)


class OutboundRoute:
    name = contract.ROUTE_OUTBOUND

    def __init__(self, service: OutboundService) -> None:
        self._service = service

    @staticmethod
    def args(request: AgiRequest) -> tuple[str, str, str | None]:
        """(purpose, callee, case reference or None) of a request."""
        # The purpose may also come as ?purpose= in the script path (seen in real dialplans).
        purpose = (request.arg(1) or request.query.get("purpose", "")).strip()
        callee = request.arg(2).strip()
        case_ref = request.arg(3).strip() or None
        if case_ref is not None and not _CASE_REF.fullmatch(case_ref):
            case_ref = None  # free text from the dialplan is not stored: it could hold health data
        return purpose, callee, case_ref

    @staticmethod
    def _area(request: AgiRequest) -> str | None:
        """The optional 4th argument ``area=<postal code|département>`` (local presence)."""
        text = request.arg(4)
        found = _AREA.fullmatch(text.strip()) if text else None
        return found.group(1) if found else None

    async def handle(self, request: AgiRequest) -> AgiAnswer:
        return await self.handle_args(request, self.args(request))

    async def handle_args(
        self, request: AgiRequest, args: tuple[str, str, str | None]
    ) -> AgiAnswer:
        """``handle`` with the request's ``args`` read already (by the compliance route)."""
        purpose, callee, case_ref = args
        area = self._area(request)
        try:
            decision = await self._service.decide(purpose, callee, request.uniqueid, case_ref, area)
        except BadRequest as exc:
            decision = Decision(contract.STATUS_ERROR, str(exc))
            self._service.record_failure(request.uniqueid, purpose, decision, callee, case_ref)
        return _reply(request, decision)

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        purpose, callee, case_ref = self.args(request)
        if reason == "unknown_route":
            decision = Decision(contract.STATUS_ERROR, "unknown_route")
        else:
            decision = self._service.fallback_decision(purpose, reason)
        if reason != "overload":
            self._service.record_failure(request.uniqueid, purpose, decision, callee, case_ref)
        return _reply(request, decision)
