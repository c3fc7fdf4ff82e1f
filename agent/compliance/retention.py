"""The retention sweep: how old call metadata may get ([retention] in pools.toml), and the
owners that delete it.

May: ask each table's owner repo (agent/store/__init__.py) to count or purge its rows older
than the table's retention, and record a call_audit purge in the audit chain. Must not: write
SQL of its own, or delete anything a table's owner does not delete itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agent.compliance.chain import AuditChain
from agent.compliance.config import ComplianceConfig
from agent.compliance.repo import ComplianceRepo
from agent.outbound.repo import OutboundRepo
from agent.outcomes.repo import OutcomeRepo
from agent.screening.repo import ScreeningRepo
from agent.store import Database

Count = Callable[[float], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class PurgePlan:
    table: str  # call_audit | outcomes | screening_decisions | spam_reports | optout_events
    days: int
    cutoff: float
    rows: int


@dataclass(frozen=True, slots=True)
class _Owned:
    """One kind of metadata, with its owner's count and purge."""

    name: str  # the [retention] key, and the name the CLI prints
    count: Count
    purge: Count


class Retention:
    def __init__(self, db: Database, repo: ComplianceRepo, chain: AuditChain) -> None:
        outbound, outcomes, screening = OutboundRepo(db), OutcomeRepo(db), ScreeningRepo(db)
        self._chain = chain
        # In this order: call_audit rows go before their outcome columns are cleared, so
        # rows deleted whole are not counted again as outcomes cleared.
        self._owned = (
            _Owned("call_audit", outbound.count_audit_before, outbound.purge_audit_before),
            _Owned("outcomes", outcomes.count_outcomes_before, outcomes.clear_outcomes_before),
            _Owned(
                "screening_decisions",
                screening.count_decisions_before,
                screening.purge_decisions_before,
            ),
            _Owned("spam_reports", outbound.count_reports_before, outbound.purge_reports_before),
            _Owned(
                "optout_events", repo.count_optout_events_before, repo.purge_optout_events_before
            ),
        )

    async def sweep(
        self, config: ComplianceConfig, now: float, *, dry_run: bool
    ) -> list[PurgePlan]:
        """Count (``dry_run``) or delete what is past its retention; a call_audit purge is
        recorded in the chain, after chaining every row it may delete."""
        plans: list[PurgePlan] = []
        for owned in self._owned:
            keep: int = getattr(config.retention, owned.name)
            cutoff = now - keep * 86400.0
            if dry_run:
                rows = await owned.count(cutoff)
            elif owned.name == "call_audit":
                await self._chain.extend(now)
                rows = await owned.purge(cutoff)
                if rows:
                    await self._chain.record_purge(owned.name, cutoff, rows, now)
            else:
                rows = await owned.purge(cutoff)
            plans.append(PurgePlan(owned.name, keep, cutoff, rows))
        return plans
