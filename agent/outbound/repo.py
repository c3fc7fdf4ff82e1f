"""SQL of the outbound engine: numbers, daily usage, rests, reports, quarantine, audit, alerts.

The only place the cap is enforced for good: ``grant_many`` (and ``claim``) add to numbers'
counts for a day in one statement that never passes a cap and says how many units each took,
so concurrent calls and several agents can never hand out more than the cap; ``give_back``
uncounts units no call used. Likewise ``move_reserves`` applies reserve promotions only from
the latest shared state, so two agents never both promote one number. Nothing here decides
policy. Portable SQL only (upsert with
ON CONFLICT, RETURNING, CASE): the same statements run on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from agent.store import Database, Row


@dataclass(frozen=True, slots=True)
class NumberRow:
    number: str
    home_pool: str
    serving_pool: str | None
    promoted_at: float | None
    active: bool
    last_used_at: float | None
    presence: str | None = None  # '' = no area; None = not computed yet


# What a view needs of a stored number, the config giving the rest:
# (serving pool, promoted at, last used at, presence key).
ViewRow = tuple[str | None, float | None, float | None, str | None]


class AuditRecord(NamedTuple):  # one per call: a tuple is made in a quarter of the time
    at: float
    uniqueid: str
    purpose: str
    pool: str | None
    number: str | None
    status: str
    reason: str
    callee_hash: str | None
    case_ref: str | None


# One statement claims a batch of distinct numbers, several units each: each row takes at most
# what is left under its cap (all SET expressions read the old row), and RETURNING lists the
# rows that took something, with their new count and how many units they took.
_GRANT = (
    "CASE WHEN excluded.cap - daily_usage.used < excluded.granted"
    " THEN excluded.cap - daily_usage.used ELSE excluded.granted END"
)
_CLAIM_HEAD = "INSERT INTO daily_usage (number, day, used, cap, granted) VALUES "
_CLAIM_TAIL = (
    f" ON CONFLICT (number, day) DO UPDATE SET granted = {_GRANT},"
    f" used = daily_usage.used + {_GRANT}, cap = excluded.cap"
    " WHERE daily_usage.used < excluded.cap RETURNING number, used, granted"
)


def _presence(
    number: str,
    presence_of: Callable[[str], str | None] | None,
    stored: dict[str, tuple[str, bool]],
) -> str | None:
    """The presence key a new row is written with (None: computed later, or kept as stored)."""
    if presence_of is None or number in stored:
        return None
    return presence_of(number) or ""


def _as_listed(found: Sequence[Row], rows: list[tuple[str, str, bool]]) -> bool:
    """The stored numbers are exactly the config's, in its order, with its pools and states:
    nothing to write (rows come back in the order a first start wrote them)."""
    return len(found) == len(rows) and all(
        r[0] == number and r[1] == pool and bool(r[2]) == active
        for r, (number, pool, active) in zip(found, rows, strict=True)
    )


class _Moved(Exception):
    """A reserve move found its number serving another pool than planned (rolls back)."""


# 9 columns a row; SQLite allows 32,766 bound parameters a statement.
_AUDIT_ROWS_PER_STATEMENT = 1000


class OutboundRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- numbers ---------------------------------------------------------------------------
    async def sync_numbers(
        self,
        numbers: Iterable[tuple[str, str, bool]],
        presence_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """Make the numbers table match the config: (E.164, home pool, active).

        Only rows that differ are written, so a restart with 100,000 unchanged numbers reads
        the table once and writes nothing (rows stored as the config lists them, the usual
        restart, are compared in order without a dict). A number new to the table is written
        with its presence key (``presence_of``, '' for none) in the same row: a first start
        with 100,000 numbers does not update each row again (a second by itself)."""
        rows = list(numbers)
        async with self.db.transaction():
            found = await self.db.fetchall("SELECT number, home_pool, active FROM numbers")
            if not _as_listed(found, rows):
                await self._write_numbers(found, rows, presence_of)
            del found
            # A promotion into a pool that no longer exists ends with the config change.
            pools = {pool for _, pool, _ in rows}
            for row in await self.db.fetchall(
                "SELECT DISTINCT serving_pool FROM numbers WHERE serving_pool IS NOT NULL"
            ):
                if row[0] not in pools:
                    await self.db.execute(
                        "UPDATE numbers SET serving_pool = NULL, promoted_at = NULL"
                        " WHERE serving_pool = ?",
                        (row[0],),
                    )

    async def _write_numbers(
        self,
        found: Sequence[Row],
        rows: list[tuple[str, str, bool]],
        presence_of: Callable[[str], str | None] | None,
    ) -> None:
        """Deactivate the stored numbers the config no longer lists, write the new or changed
        ones."""
        stored = {r[0]: (r[1], bool(r[2])) for r in found}
        wanted = {number for number, _, _ in rows}
        gone = [(n,) for n, (_, active) in stored.items() if active and n not in wanted]
        if gone:
            await self.db.executemany("UPDATE numbers SET active = 0 WHERE number = ?", gone)
        changed = [
            (number, pool, int(active), _presence(number, presence_of, stored))
            for number, pool, active in rows
            if stored.get(number) != (pool, active)
        ]
        if changed:
            await self.db.executemany(
                "INSERT INTO numbers (number, home_pool, active, presence) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (number) DO UPDATE SET home_pool = excluded.home_pool, "
                "active = excluded.active",
                changed,
            )

    async def numbers(self) -> list[NumberRow]:
        rows = await self.db.fetchall(
            "SELECT number, home_pool, serving_pool, promoted_at, active, last_used_at, presence"
            " FROM numbers"
        )
        return [NumberRow(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]

    async def view_rows(self) -> dict[str, ViewRow]:
        """{number: ViewRow}: one query, only the columns a view is built from, no object per
        row but the tuple the driver returns (100,000 rows at every start)."""
        rows = await self.db.fetchall(
            "SELECT number, serving_pool, promoted_at, last_used_at, presence FROM numbers"
        )
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    async def set_presences(self, presences: Iterable[tuple[str, str]]) -> None:
        await self.db.executemany(
            "UPDATE numbers SET presence = ? WHERE number = ?",
            [(presence, number) for number, presence in presences],
        )

    async def move_reserves(
        self, moves: Sequence[tuple[str, str | None, str | None]], at: float, seen_version: int
    ) -> bool:
        """Promote reserve numbers or send them back, [(number, pool it serves now or None,
        pool to serve or None)], all or none: only while the shared state is still at
        ``seen_version`` (what the caller planned from) and each number still serves what the
        caller saw. True when applied (the state version is then ``seen_version + 1``); False
        when another process changed the state first (nothing written: read it, re-plan).

        Transactions are serialised on both backends, so of two agents planning from one
        version exactly one applies its moves: a reserve number is never promoted twice."""
        try:
            async with self.db.transaction():
                if not await self.db.execute(
                    "UPDATE state_version SET version = version + 1 WHERE id = 1 AND version = ?",
                    (seen_version,),
                ):
                    return False
                for number, was, to in moves:
                    if not await self.db.execute(
                        "UPDATE numbers SET serving_pool = ?, promoted_at = ? WHERE number = ?"
                        " AND COALESCE(serving_pool, '') = ?",
                        (to, at if to is not None else None, number, was or ""),
                    ):
                        raise _Moved  # changed without a version bump (a config sync): undo all
        except _Moved:
            return False
        return True

    async def set_serving_pool(self, number: str, pool: str | None, at: float | None) -> None:
        await self.db.execute(
            "UPDATE numbers SET serving_pool = ?, promoted_at = ? WHERE number = ?",
            (pool, at if pool else None, number),
        )

    # -- usage -----------------------------------------------------------------------------
    async def claim(self, number: str, day: str, cap: int) -> int | None:
        """Count one call for ``number`` on ``day`` unless at ``cap``: the new count, or None."""
        return (await self.claim_many([(number, day, cap)])).get(number)

    async def claim_many(self, claims: Sequence[tuple[str, str, int]]) -> dict[str, int]:
        """Claim one unit of distinct numbers at once: {number: new count} for those under cap."""
        got = await self.grant_many([(number, day, cap, 1) for number, day, cap in claims])
        return {number: used for number, (used, _) in got.items()}

    async def grant_many(
        self, claims: Sequence[tuple[str, str, int, int]]
    ) -> dict[str, tuple[int, int]]:
        """Take up to ``want`` units of each of distinct numbers at once, never past its cap.

        ``claims`` are (number, day, cap, want); returns {number: (new count, units taken)} for
        the numbers that took at least one unit (the units taken are the last ones counted).
        """
        if len({number for number, _, _, _ in claims}) != len(claims):
            raise ValueError("a claim batch names each number once")
        params: list[object] = []
        # Sorted: two agents' batches lock rows in one order on PostgreSQL (no deadlock).
        for number, day, cap, want in sorted(claims):
            first = max(0, min(want, cap))
            params += (number, day, first, cap, first)
        sql = _CLAIM_HEAD + ",".join(["(?, ?, ?, ?, ?)"] * len(claims)) + _CLAIM_TAIL
        rows = await self.db.fetchall(sql, params)
        return {row[0]: (int(row[1]), int(row[2])) for row in rows if int(row[2]) > 0}

    async def give_back(self, number: str, day: str, units: int) -> None:
        """Uncount ``units`` claimed for ``number`` on ``day`` that no call used."""
        await self.db.execute(
            "UPDATE daily_usage SET used = used - ? WHERE number = ? AND day = ? AND used >= ?",
            (units, number, day, units),
        )

    async def usage_since(self, day: str) -> list[tuple[str, str, int]]:
        rows = await self.db.fetchall(
            "SELECT number, day, used FROM daily_usage WHERE day >= ?", (day,)
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    async def usage_for(self, number: str, days: Sequence[str]) -> dict[str, int]:
        if not days:
            return {}
        marks = ",".join("?" for _ in days)
        rows = await self.db.fetchall(
            f"SELECT day, used FROM daily_usage WHERE number = ? AND day IN ({marks})",
            (number, *days),
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- rests and quarantine --------------------------------------------------------------
    async def add_rest(self, number: str, start: float, end: float, reason: str) -> None:
        await self.db.execute(
            "INSERT INTO rests (number, starts_at, ends_at, reason) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (number, starts_at) DO NOTHING",
            (number, start, end, reason),
        )

    async def rests_after(self, now: float) -> list[tuple[str, float, float]]:
        rows = await self.db.fetchall(
            "SELECT number, starts_at, ends_at FROM rests WHERE ends_at > ?", (now,)
        )
        return [(r[0], float(r[1]), float(r[2])) for r in rows]

    async def quarantines_after(self, now: float) -> list[tuple[str, float]]:
        rows = await self.db.fetchall(
            "SELECT number, until FROM quarantines WHERE until > ?", (now,)
        )
        return [(r[0], float(r[1])) for r in rows]

    async def quarantine(self, number: str, since: float, until: float, reason: str) -> None:
        await self.db.execute(
            "INSERT INTO quarantines (number, since, until, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (number) DO UPDATE SET since = excluded.since, until = excluded.until, "
            "reason = excluded.reason",
            (number, since, until, reason),
        )

    async def reinstate(self, number: str, now: float) -> bool:
        """End a quarantine and any rest now; True when there was something to end."""
        async with self.db.transaction():
            q = await self.db.execute("DELETE FROM quarantines WHERE number = ?", (number,))
            r = await self.db.execute(
                "UPDATE rests SET ends_at = ? WHERE number = ? AND ends_at > ?", (now, number, now)
            )
        return (q + r) > 0

    async def add_report(
        self,
        number: str,
        at: float,
        day: str,
        source: str,
        ours: bool,
        event_id: str | None = None,
    ) -> tuple[int, bool]:
        """Record a spam report; returns how many reports the number has on ``day``, and
        False when a report with the same ``event_id`` was already there (another agent
        stored the same AMI event): nothing is added then."""
        async with self.db.transaction():
            added = await self.db.execute(
                "INSERT INTO spam_reports (number, reported_at, day, source, ours, event_id)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (number, at, day, source, int(ours), event_id),
            )
            row = await self.db.fetchone(
                "SELECT COUNT(*) FROM spam_reports WHERE number = ? AND day = ?", (number, day)
            )
        return (int(row[0]) if row else 0), added > 0

    # -- alerts and cross-process change notices -------------------------------------------
    async def add_alert(self, at: float, kind: str, pool: str | None, message: str) -> None:
        await self.db.execute(
            "INSERT INTO alerts (at, kind, pool, message) VALUES (?, ?, ?, ?)",
            (at, kind, pool, message),
        )

    async def state_version(self) -> int:
        row = await self.db.fetchone("SELECT version FROM state_version WHERE id = 1")
        return int(row[0]) if row else 0

    async def bump_state_version(self) -> None:
        await self.db.execute("UPDATE state_version SET version = version + 1 WHERE id = 1")

    # -- retention (the compliance sweep asks; only this owner deletes the rows) -----------
    async def count_audit_before(self, cutoff: float) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM call_audit WHERE at < ?", (cutoff,))
        return int(row[0]) if row else 0

    async def purge_audit_before(self, cutoff: float) -> int:
        """Delete call_audit rows decided before ``cutoff``: how many went."""
        return await self.db.execute("DELETE FROM call_audit WHERE at < ?", (cutoff,))

    async def count_reports_before(self, cutoff: float) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM spam_reports WHERE reported_at < ?", (cutoff,)
        )
        return int(row[0]) if row else 0

    async def purge_reports_before(self, cutoff: float) -> int:
        """Delete spam reports made before ``cutoff``: how many went."""
        return await self.db.execute("DELETE FROM spam_reports WHERE reported_at < ?", (cutoff,))

    # -- audit -----------------------------------------------------------------------------
    async def write_audit(
        self, records: Sequence[AuditRecord], last_used: dict[str, float]
    ) -> None:
        """One multi-row INSERT per slice of rows, each atomic on its own: no transaction is
        held open across round trips, so claims never queue behind an audit batch."""
        for start in range(0, len(records), _AUDIT_ROWS_PER_STATEMENT):
            chunk = records[start : start + _AUDIT_ROWS_PER_STATEMENT]
            params: list[object] = []
            for r in chunk:
                params += r  # its fields are the columns, in this order
            await self.db.execute(
                "INSERT INTO call_audit (at, uniqueid, purpose, pool, number, status, reason,"
                " callee_hash, case_ref) VALUES "
                + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)),
                params,
            )
        # Last use only breaks ties after a restart: a hint, written in one statement.
        if last_used:
            # The cast types the bare parameters for PostgreSQL (a CASE of them is text there).
            cases = " ".join(["WHEN ? THEN CAST(? AS DOUBLE PRECISION)"] * len(last_used))
            marks = ",".join(["?"] * len(last_used))
            params = [v for number, at in last_used.items() for v in (number, at)]
            await self.db.execute(
                f"UPDATE numbers SET last_used_at = CASE number {cases} END"
                f" WHERE number IN ({marks})",
                [*params, *last_used],
            )
