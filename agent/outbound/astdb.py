"""What AstDB must hold so the dialplan has a fallback caller ID per purpose while the agent
is down: ``${DB(trustline/fallback/<purpose>)}``.

Pure: given the pools' fallbacks and the index of purposes written before, it returns the
DBPut / DBDel actions to run, in order. May: name AstDB keys (from agent.contract). Must not:
talk to Asterisk (the AMI link runs the actions) or decide which number is a fallback (the
outbound service does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.contract import ASTDB_FALLBACK_FAMILY, ASTDB_FALLBACK_INDEX_KEY, ASTDB_FAMILY

# A purpose becomes an AstDB key: only characters that need no quoting in the dialplan.
_PURPOSE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


@dataclass(frozen=True, slots=True)
class AstDbAction:
    """One AMI action on AstDB: ``DBPut`` (must succeed) or ``DBDel`` (a key already gone
    answers Error, which is fine)."""

    name: str
    family: str
    key: str
    value: str | None = None

    @property
    def required(self) -> bool:
        return self.name == "DBPut"

    def fields(self) -> dict[str, str]:
        fields = {"Family": self.family, "Key": self.key}
        if self.value is not None:
            fields["Val"] = self.value
        return fields


@dataclass(frozen=True, slots=True)
class AstDbPlan:
    actions: list[AstDbAction]
    written: int
    removed: int

    @property
    def summary(self) -> str:
        return f"AstDB fallbacks written for {self.written} purposes, {self.removed} stale removed"


def plan_fallbacks(fallbacks: Mapping[str, str], index_value: str | None) -> AstDbPlan:
    """The actions that make AstDB hold exactly ``fallbacks`` (purpose -> number).

    ``index_value``: the index key's value as read (None: not there, first run on this PBX).
    The index is written first listing old and new purposes, so a crash midway still knows
    what to delete on the next run; it lists only the new ones at the end.
    """
    wanted = {p: n for p, n in fallbacks.items() if set(p) <= _PURPOSE_CHARS}
    previous = {p for p in (index_value or "").split(",") if p}
    stale = previous - set(wanted)
    index = ASTDB_FAMILY, ASTDB_FALLBACK_INDEX_KEY
    actions = [AstDbAction("DBPut", *index, ",".join(sorted(previous | set(wanted))))]
    actions += [
        AstDbAction("DBPut", ASTDB_FALLBACK_FAMILY, p, n) for p, n in sorted(wanted.items())
    ]
    actions += [AstDbAction("DBDel", ASTDB_FALLBACK_FAMILY, p) for p in sorted(stale)]
    actions.append(AstDbAction("DBPut", *index, ",".join(sorted(wanted))))
    return AstDbPlan(actions, len(wanted), len(stale))


class FallbackSync:
    """The AstDB side of the outbound feature, as the AMI link sees it: which key to read
    first, then the plan for what it said."""

    index = (ASTDB_FAMILY, ASTDB_FALLBACK_INDEX_KEY)

    def __init__(self, fallbacks: Callable[[], Mapping[str, str]]) -> None:
        self._fallbacks = fallbacks

    def plan(self, index_value: str | None) -> AstDbPlan:
        return plan_fallbacks(self._fallbacks(), index_value)
