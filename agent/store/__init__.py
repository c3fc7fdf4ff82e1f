"""Storage: one Database interface (``base.py``), SQLite (``db.py``, the embedded default) and
PostgreSQL (``postgres.py``, several agents on one database) behind it, chosen by URL.

Feature modules keep their SQL in their own repository classes (agent/outbound/repo.py, ...)
and talk to the database only through ``Database``. Placeholders are ``?`` everywhere, and the
SQL is portable: what only one backend understands lives in that backend's module or in its
migrations (``migrations/*.sql`` for SQLite, ``migrations/postgres/*.sql``, same numbers).

One owner per table: only the owner module writes it (tests/test_layout.py checks the SQL).
Other features ask the owner's service, or read through a named query the owner publishes.

| table                                          | written by (the one owner)     |
|------------------------------------------------|--------------------------------|
| numbers, daily_usage, rests, quarantines,      | agent/outbound/repo.py         |
| spam_reports, alerts, state_version            |                                |
| call_audit: rows and decision columns          | agent/outbound/repo.py         |
| call_audit: outcome columns (outcome,          | agent/outcomes/repo.py         |
| dial_status, hangup_cause, cdr_disposition,    |                                |
| talk_seconds, linkedid, ended_at)              |                                |
| screening_lists, screening_state,              | agent/screening/repo.py        |
| screening_decisions                            |                                |
| recordings, recording_audit                    | agent/recordings/repo.py       |
| alert_incidents, alert_outbox                  | agent/alerts/repo.py           |
| reputation_checks                              | agent/reputation/repo.py       |
| optouts, optout_events, compliance_state,      | agent/compliance/repo.py       |
| audit_chain, audit_anchors, admin_audit        |                                |
| api_tokens                                     | agent/tokens/repo.py           |
| contact_pins, contact_sms_outbox,              | agent/contact/repo.py          |
| cnam_provisioned                               |                                |
| schema_migrations                              | agent/store/db.py and          |
|                                                | agent/store/postgres.py        |

call_audit is one row per decision with two owners by column, never by row: the outbound
repo inserts it (and never updates it; it deletes rows past retention), the outcomes repo only
fills in (and clears past retention) the outcome columns of the row a decision wrote (it never
inserts). Named reads across features:
agent/outbound/reads.py (who we called, for screening's callback check; what happened to our
numbers, for the weekly report), AlertRepo.incidents_between (the weekly report), OutcomeRepo
reads (stats, drift, report). Outside features: the readiness probe in app.py reads
state_version, and ``trustline db copy`` (agent/cli/db.py) copies every table whole.
A feature that adds a table adds its line here.

Retention: the compliance sweep (agent/compliance/retention.py) deletes nothing itself; it asks
each owner to count or purge its old rows (OutboundRepo: call_audit rows and spam_reports;
OutcomeRepo: outcome columns; ScreeningRepo: screening_decisions; ComplianceRepo:
optout_events).

Not yet so (tests/test_layout.py lists it, to be moved behind the owners' repos): the
compliance feature's attempt count and audit export read call_audit and recording_audit
directly (agent/compliance/repo.py); the dashboard's read model (agent/admin/views.py, on its
own read connection) queries other features' tables.
"""

from __future__ import annotations

from pathlib import Path

from agent.store.base import Database, Row, SchemaTooNew, parse_url, redact

__all__ = ["Database", "Row", "SchemaTooNew", "open_database", "redact"]


async def open_database(
    target: str | Path, *, migrate: bool = True, pool_size: int = 10, wait: bool = True
) -> Database:
    """Open the store named by ``target`` (a URL, or a SQLite file path) and migrate it.

    ``wait=False`` (the agent at start): a PostgreSQL server that cannot be reached yet does
    not stop the caller; the database keeps connecting in the background and every statement
    fails with a StoreError until it does. A bad URL raises ConfigError naming the setting.
    """
    from agent.store import db  # here: each backend loads its driver only when used

    if isinstance(target, Path):
        return await db.open_database(target, migrate=migrate)
    backend, path = parse_url(target)
    if backend == "sqlite":
        assert path is not None
        return await db.open_database(path, migrate=migrate)
    from agent.store import postgres  # asyncpg: ~3 MB an agent on SQLite never needs

    return await postgres.open_postgres(target, pool_size=pool_size, migrate=migrate, wait=wait)
