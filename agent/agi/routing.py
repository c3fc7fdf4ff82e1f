"""What a FastAGI route sees and returns, independent of the socket.

A route turns an ``AgiRequest`` into an ``AgiAnswer`` (channel variables to set, in order).
Every route declares its failure policy: ``on_failure`` builds a safe answer without I/O, used
when the handler raises or misses the deadline. The server never hangs up a call on a failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from agent import contract


# Both are NamedTuples, immutable like a frozen dataclass: made once or more per call, a tuple
# is built in a fraction of the time (a frozen dataclass sets each field through
# object.__setattr__).
class AgiRequest(NamedTuple):
    route: str  # path of agi://host:port/<route> without the query string
    query: Mapping[str, str]  # ?key=value pairs of the script path
    args: tuple[str, ...]  # agi_arg_1 .. agi_arg_N
    env: Mapping[str, str]  # every agi_* header as sent
    peer: str

    @property
    def uniqueid(self) -> str:
        return self.env.get("agi_uniqueid", "")

    @property
    def callerid(self) -> str:
        """Caller number; Asterisk sends ``unknown`` when there is none."""
        value = self.env.get("agi_callerid", "")
        return "" if value == "unknown" else value

    @property
    def calleridname(self) -> str:
        value = self.env.get("agi_calleridname", "")
        return "" if value == "unknown" else value

    @property
    def callingpres(self) -> int:
        try:
            return int(self.env.get("agi_callingpres", "0"))
        except ValueError:
            return 0

    def arg(self, index: int, default: str = "") -> str:
        """1-based argument, as in the dialplan's AGI(url,arg1,arg2...)."""
        return self.args[index - 1] if 0 < index <= len(self.args) else default


class AgiAnswer(NamedTuple):
    variables: tuple[tuple[str, str], ...] = ()
    # Short label for logs and metrics ("ok", "fallback", "block", ...).
    outcome: str = ""

    def packed(self, fields: tuple[str, ...]) -> AgiAnswer:
        """The same answer as one variable (contract.VAR_ANSWER): ``fields`` in order, joined
        by contract.ANSWER_SEPARATOR, a variable not set being an empty field."""
        values = dict(self.variables)
        text = contract.ANSWER_SEPARATOR.join(values.get(name, "") for name in fields)
        return AgiAnswer(((contract.VAR_ANSWER, text),), self.outcome)


def wants_one_variable(request: AgiRequest) -> bool:
    return request.query.get(contract.QUERY_ANSWER) == contract.QUERY_ANSWER_ONE


class Route(Protocol):
    name: str

    async def handle(self, request: AgiRequest) -> AgiAnswer: ...

    def on_failure(self, request: AgiRequest, reason: str) -> AgiAnswer:
        """Safe answer (no I/O) when ``handle`` raised or missed the deadline."""
        ...
