"""SQL of the api_tokens table (migration 0040). Holds token hashes, never tokens.

May: insert, list, revoke and look up tokens by hash or id. Must not: generate or hash
tokens (the service does) or decide whether a token is valid now.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.store import Database, Row

_COLUMNS = "id, name, role, created_at, created_by, expires_at, revoked_at, last_used_at"


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    name: str
    role: str
    created_at: float
    created_by: str
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


def _row(r: Row) -> TokenRow:
    return TokenRow(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        float(r[3]),
        str(r[4]),
        None if r[5] is None else float(r[5]),
        None if r[6] is None else float(r[6]),
        None if r[7] is None else float(r[7]),
    )


class TokenRepo:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(
        self,
        name: str,
        role: str,
        token_hash: str,
        at: float,
        created_by: str,
        expires_at: float | None,
    ) -> TokenRow | None:
        """The new row, or None when a live token already has this name."""
        async with self._db.transaction() as tx:
            taken = await tx.fetchone(
                "SELECT 1 FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)
            )
            if taken is not None:
                return None
            await tx.execute(
                "INSERT INTO api_tokens (name, role, token_hash, created_at, created_by,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                (name, role, token_hash, at, created_by, expires_at),
            )
            row = await tx.fetchone(
                f"SELECT {_COLUMNS} FROM api_tokens WHERE token_hash = ?", (token_hash,)
            )
        return None if row is None else _row(row)

    async def by_hash(self, token_hash: str) -> TokenRow | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_hash = ?", (token_hash,)
        )
        return None if row is None else _row(row)

    async def by_id(self, token_id: int) -> TokenRow | None:
        row = await self._db.fetchone(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)
        )
        return None if row is None else _row(row)

    async def listing(self) -> list[TokenRow]:
        rows = await self._db.fetchall(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY id")
        return [_row(r) for r in rows]

    async def revoke(self, name: str, at: float) -> int:
        """Revoke the live token of ``name``; how many rows changed (0 or 1)."""
        return await self._db.execute(
            "UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
            (at, name),
        )

    async def touch(self, token_id: int, at: float) -> None:
        await self._db.execute(
            "UPDATE api_tokens SET last_used_at = ? WHERE id = ?", (at, token_id)
        )
