"""SQL of compliance: opt-outs, attempt counts, the admin audit, the hash chain, retention.

May: write optouts, optout_events, compliance_state, admin_audit, audit_chain and
audit_anchors (migration 0030, the only writer); read call_audit and recording_audit to count
attempts, chain and export them; delete its own optout_events past their retention. Must not:
write other features' tables (their owners' repos purge them: agent/compliance/retention.py
asks each), decide policy or hold state. Portable SQL only (``?`` placeholders, ON CONFLICT),
for SQLite and PostgreSQL. The background reads (opt-out reloads, the attempt tail, the chain's
reads of new rows) go through ``db.reads``, so a claim on the write connection never queues
behind them; what must be consistent with a write (the chain's head check) reads in its
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from agent.store import Database

# The columns of each chained table that a row's hash covers: what was decided or done.
# call_audit's outcome columns are filled in later by the AMI link (call progress), and are
# not covered; recording_audit rows are chained once their outcome is settled.
CHAINED: dict[str, tuple[str, ...]] = {
    "call_audit": (
        "id", "at", "uniqueid", "purpose", "pool", "number", "status", "reason",
        "callee_hash", "case_ref",
    ),
    "admin_audit": ("id", "at", "actor", "action", "target", "detail"),
    "recording_audit": (
        "id", "at", "action", "recording_id", "operator", "reason", "outcome", "detail",
    ),
}  # fmt: skip

# Decisions that let a call go out count as attempts; a call never dialled does not.
ATTEMPT_STATUSES = ("ok", "exhausted", "fallback")
_ATTEMPT_MARKS = ", ".join("?" * len(ATTEMPT_STATUSES))

# How far a table is chained: "tbl <> 'purge'" lets SQLite use the partial index
# audit_chain_row for a bound table name; without it MAX(row_id) scanned the whole chain.
CHAINED_UP_TO = (
    "SELECT row_id FROM audit_chain WHERE tbl = ? AND tbl <> 'purge' ORDER BY row_id DESC LIMIT 1"
)
_HEAD = (
    "SELECT seq, tbl, row_id, row_at, row_hash, prev_hash, detail FROM audit_chain"
    " ORDER BY seq DESC LIMIT 1"
)


AttemptRow = tuple[int, str, str, float, str]  # (id, callee hash, purpose, at, uniqueid)
_ATTEMPT_COLUMNS = "id, callee_hash, purpose, at, status, uniqueid"


class AttemptPage(NamedTuple):
    rows: list[AttemptRow]  # the calls let out, of the purposes asked for, in the period
    top: int  # the highest id read (``after_id`` if none)
    read: int  # how many rows were read
    missing: list[int]  # ids below ``top`` not there (yet: on PostgreSQL, a lower id may
    # commit after a higher one)


def _attempts(rows: Sequence[Any], since: float, purposes: Sequence[str]) -> list[AttemptRow]:
    wanted = set(purposes)
    every = "*" in wanted
    return [
        (int(r[0]), str(r[1]), str(r[2]), float(r[3]), str(r[5] or ""))
        for r in rows
        if r[4] in ATTEMPT_STATUSES and r[1] and float(r[3]) >= since
        and (every or r[2] in wanted)
    ]  # fmt: skip


def _attempts_of(
    hashes: Sequence[str], purpose: str, since: float, up_to_id: int | None, without: Sequence[int]
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause (and its parameters) of the calls let out to ``hashes`` for
    ``purpose`` since ``since``, ids up to ``up_to_id`` (None: all) except ``without``."""
    marks = ", ".join("?" * len(hashes))
    skip = f" AND id NOT IN ({', '.join('?' * len(without))})" if without else ""
    where = (
        f"callee_hash IN ({marks}) AND at >= ? AND id <= ? AND purpose = ?"
        f" AND status IN ({_ATTEMPT_MARKS}){skip}"
    )
    up_to = 2**62 if up_to_id is None else up_to_id
    return where, (*hashes, since, up_to, purpose, *ATTEMPT_STATUSES, *without)


class ChainEntry(NamedTuple):  # a tuple: one per chained row, made cheaply, inserted as is
    seq: int
    tbl: str
    row_id: int
    row_at: float
    row_hash: str
    prev_hash: str
    detail: str | None


class ComplianceRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- opt-outs --------------------------------------------------------------------------
    async def add_optout(
        self, callee_hash: str, purpose: str, at: float, source: str, event_id: str | None
    ) -> bool:
        """Record an opt-out; False when this AMI event was already stored (another agent)
        or the callee had already opted out of this purpose."""
        async with self.db.transaction():
            fresh = await self.db.execute(
                "INSERT INTO optout_events (at, action, callee_hash, purpose, source, event_id)"
                " VALUES (?, 'add', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (at, callee_hash, purpose, source, event_id),
            )
            if not fresh:
                return False
            added = await self.db.execute(
                "INSERT INTO optouts (callee_hash, purpose, at, source) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (callee_hash, purpose, at, source),
            )
            await self._bump()
        return added > 0

    async def remove_optout(self, callee_hash: str, purpose: str, at: float, source: str) -> bool:
        async with self.db.transaction():
            removed = await self.db.execute(
                "DELETE FROM optouts WHERE callee_hash = ? AND purpose = ?", (callee_hash, purpose)
            )
            if removed:
                await self.db.execute(
                    "INSERT INTO optout_events (at, action, callee_hash, purpose, source)"
                    " VALUES (?, 'remove', ?, ?, ?)",
                    (at, callee_hash, purpose, source),
                )
                await self._bump()
        return removed > 0

    async def _bump(self) -> None:
        await self.db.execute(
            "INSERT INTO compliance_state (id, optout_version) VALUES (1, 1) ON CONFLICT (id)"
            " DO UPDATE SET optout_version = compliance_state.optout_version + 1"
        )

    async def optout_version(self) -> int:
        row = await self.db.reads.fetchone(
            "SELECT optout_version FROM compliance_state WHERE id = 1"
        )
        return int(row[0]) if row else 0

    async def optouts(self) -> set[tuple[str, str]]:
        rows = await self.db.reads.fetchall("SELECT callee_hash, purpose FROM optouts")
        return {(str(r[0]), str(r[1])) for r in rows}

    async def optouts_of(self, callee_hash: str) -> list[tuple[str, float, str]]:
        rows = await self.db.fetchall(
            "SELECT purpose, at, source FROM optouts WHERE callee_hash = ? ORDER BY purpose",
            (callee_hash,),
        )
        return [(str(r[0]), float(r[1]), str(r[2])) for r in rows]

    # -- attempts --------------------------------------------------------------------------
    async def attempt_start(self, since: float) -> int:
        """The id just before the first call_audit row at or after ``since``; with none, the
        last id (0 for an empty table): where a tail of the period starts."""
        row = await self.db.reads.fetchone(
            "SELECT COALESCE((SELECT MIN(id) FROM call_audit WHERE at >= ?) - 1,"
            " (SELECT MAX(id) FROM call_audit), 0)",
            (since,),
        )
        return int(row[0]) if row else 0

    async def attempt_rows(
        self, after_id: int, since: float, purposes: Sequence[str], limit: int
    ) -> AttemptPage:
        """Calls let out for ``purposes`` ("*": all) since ``since``, among the first ``limit``
        rows after ``after_id`` in id order. A page read by primary key; filtered here."""
        rows = await self.db.reads.fetchall(
            f"SELECT {_ATTEMPT_COLUMNS} FROM call_audit WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        top = int(rows[-1][0]) if rows else after_id
        seen = {int(r[0]) for r in rows}
        gap = top - after_id - len(rows)
        # A jump of thousands (a restored sequence) is no commit in flight: nothing to wait for.
        missing = [i for i in range(after_id + 1, top) if i not in seen] if 0 < gap <= 1000 else []
        return AttemptPage(_attempts(rows, since, purposes), top, len(rows), missing)

    async def attempt_rows_in(
        self, ids: Sequence[int], since: float, purposes: Sequence[str]
    ) -> tuple[list[AttemptRow], set[int]]:
        """The calls let out among rows ``ids`` (missing from an earlier page), and which of
        those ids exist now."""
        rows = await self.db.reads.fetchall(
            f"SELECT {_ATTEMPT_COLUMNS} FROM call_audit WHERE id IN ({', '.join('?' * len(ids))})",
            tuple(ids),
        )
        return _attempts(rows, since, purposes), {int(r[0]) for r in rows}

    async def attempt_times(
        self,
        hashes: Sequence[str],
        purpose: str,
        since: float,
        up_to_id: int,
        without: Sequence[int] = (),
    ) -> list[tuple[str, float]]:
        """``attempt_count``'s calls as (callee hash, at), to be kept."""
        where, params = _attempts_of(hashes, purpose, since, up_to_id, without)
        rows = await self.db.reads.fetchall(
            f"SELECT callee_hash, at FROM call_audit WHERE {where}", params
        )
        return [(str(r[0]), float(r[1])) for r in rows]

    async def attempt_count(
        self,
        hashes: Sequence[str],
        purpose: str,
        since: float,
        up_to_id: int | None,
        without: Sequence[int] = (),
    ) -> int:
        """Calls let out for ``purpose`` to any of ``hashes`` since ``since``, among the rows
        up to ``up_to_id`` (None: all) except ids ``without``: one look-up on call_audit
        (callee_hash, at)."""
        where, params = _attempts_of(hashes, purpose, since, up_to_id, without)
        row = await self.db.reads.fetchone(f"SELECT COUNT(*) FROM call_audit WHERE {where}", params)
        return int(row[0]) if row else 0

    # -- admin audit -----------------------------------------------------------------------
    async def add_admin(self, at: float, actor: str, action: str, target: str, detail: str) -> None:
        await self.db.execute(
            "INSERT INTO admin_audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
            (at, actor, action, target, detail),
        )

    # -- the chain -------------------------------------------------------------------------
    async def chain_head(self) -> ChainEntry | None:
        row = await self.db.reads.fetchone(_HEAD)
        return _entry(row) if row else None

    async def chained_up_to(self, tbl: str) -> int:
        row = await self.db.reads.fetchone(CHAINED_UP_TO, (tbl,))
        return int(row[0]) if row else 0

    async def rows_after(self, tbl: str, after_id: int, limit: int) -> list[tuple[Any, ...]]:
        """Rows of a chained table in id order, with the chained columns."""
        cols = ", ".join(CHAINED[tbl])
        rows = await self.db.reads.fetchall(
            f"SELECT {cols} FROM {tbl} WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [tuple(r) for r in rows]

    async def append_chain(self, expected_head: int, entries: Sequence[ChainEntry]) -> bool:
        """Append entries if the head is still ``expected_head`` (0: empty); False when
        another process chained meanwhile (nothing written: try again later)."""
        async with self.db.transaction() as tx:
            row = await tx.fetchone(_HEAD)  # in the transaction: no append lands meanwhile
            if (int(row[0]) if row else 0) != expected_head:
                return False
            await tx.executemany(  # an entry's fields are the columns, in this order
                "INSERT INTO audit_chain (seq, tbl, row_id, row_at, row_hash, prev_hash, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                entries,
            )
        return True

    async def chain_entries(self, after_seq: int, limit: int) -> list[ChainEntry]:
        rows = await self.db.fetchall(
            "SELECT seq, tbl, row_id, row_at, row_hash, prev_hash, detail FROM audit_chain"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_entry(r) for r in rows]

    async def add_anchor(self, day: str, seq: int, head_hash: str, at: float) -> bool:
        return (
            await self.db.execute(
                "INSERT INTO audit_anchors (day, seq, head_hash, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (day, seq, head_hash, at),
            )
            > 0
        )

    async def anchors(self) -> list[tuple[str, int, str]]:
        rows = await self.db.fetchall("SELECT day, seq, head_hash FROM audit_anchors ORDER BY seq")
        return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]

    # -- retention of its own table (the sweep asks every owner: compliance/retention.py) --
    async def count_optout_events_before(self, cutoff: float) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM optout_events WHERE at < ?", (cutoff,))
        return int(row[0]) if row else 0

    async def purge_optout_events_before(self, cutoff: float) -> int:
        """Delete opt-out events before ``cutoff`` (the opt-outs themselves stay)."""
        return await self.db.execute("DELETE FROM optout_events WHERE at < ?", (cutoff,))

    # -- export ----------------------------------------------------------------------------
    async def calls_between(self, since: float, until: float) -> list[tuple[Any, ...]]:
        rows = await self.db.fetchall(
            "SELECT at, purpose, case_ref, pool, number, status, reason, outcome, callee_hash"
            " FROM call_audit WHERE at >= ? AND at < ? ORDER BY at, id",
            (since, until),
        )
        return [tuple(r) for r in rows]

    async def admin_between(self, since: float, until: float) -> list[tuple[Any, ...]]:
        rows = await self.db.fetchall(
            "SELECT at, actor, action, target, detail FROM admin_audit"
            " WHERE at >= ? AND at < ? ORDER BY at, id",
            (since, until),
        )
        return [tuple(r) for r in rows]

    async def recording_access_between(self, since: float, until: float) -> list[tuple[Any, ...]]:
        rows = await self.db.fetchall(
            "SELECT at, operator, action, recording_id, reason, outcome FROM recording_audit"
            " WHERE at >= ? AND at < ? ORDER BY at, id",
            (since, until),
        )
        return [tuple(r) for r in rows]


def _entry(row: Any) -> ChainEntry:
    return ChainEntry(
        int(row[0]), str(row[1]), int(row[2]), float(row[3]), str(row[4]), str(row[5]), row[6]
    )
