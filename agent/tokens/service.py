"""Token use cases: create (the secret is returned once), list, revoke, authenticate.

Tokens are 256 random bits (``secrets``), stored as their SHA-256. A slow password hash
(scrypt, argon2) defends guessable secrets against offline guessing; a 256-bit random token
cannot be guessed, so one SHA-256 is as strong and lets every request find its token by an
indexed lookup. May: hash and compare tokens, read and write through TokenRepo. Must not:
log or store a token in clear, or decide what a role may do (agent.tokens.roles does).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass

from agent.clock import Clock
from agent.errors import BadRequest
from agent.store import Database
from agent.tokens.repo import TokenRepo, TokenRow
from agent.tokens.roles import ROLES

log = logging.getLogger(__name__)

PREFIX = "tl_"
_TOKEN = re.compile(r"^tl_[A-Za-z0-9_-]{43}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")
DAY = 86400.0
TOUCH_EVERY = 300.0  # last_used_at is a hint: one write per token every five minutes at most


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is from: a live token's holder and role."""

    token_id: int
    name: str
    role: str


class TokenService:
    def __init__(self, db: Database, clock: Clock, *, read_db: Database | None = None) -> None:
        self._repo = TokenRepo(db)
        self._read = TokenRepo(read_db) if read_db is not None else self._repo
        self._clock = clock
        self._touched: dict[int, float] = {}

    async def create(
        self, name: str, role: str, *, expires_days: float | None, created_by: str
    ) -> tuple[TokenRow, str]:
        """A new token for ``name``: its row and the secret, which is never shown again."""
        name = name.strip()
        if not _NAME.match(name):
            raise BadRequest("a token name is 1-64 letters, digits, spaces or . _ @ - (e.g. alice)")
        if role not in ROLES:
            raise BadRequest(f"unknown role {role!r} (use one of {', '.join(ROLES)})")
        if expires_days is not None and not 0 < expires_days <= 3650:
            raise BadRequest("expiry: between 1 and 3650 days")
        now = self._clock.now()
        secret = PREFIX + secrets.token_urlsafe(32)
        expires = None if expires_days is None else now + expires_days * DAY
        row = await self._repo.insert(name, role, token_hash(secret), now, created_by, expires)
        if row is None:
            raise BadRequest(f"a live token named {name!r} exists; revoke it first")
        log.info("tokens: created token %d for %s (%s)", row.id, name, role)
        return row, secret

    async def listing(self) -> list[TokenRow]:
        return await self._repo.listing()

    async def revoke(self, name: str) -> bool:
        changed = await self._repo.revoke(name.strip(), self._clock.now()) > 0
        if changed:
            log.info("tokens: revoked the token of %s", name)
        return changed

    async def authenticate(self, secret: str) -> Principal | None:
        """The live token behind ``secret``, or None (unknown, expired, revoked, malformed)."""
        if not _TOKEN.match(secret):
            return None
        row = await self._read.by_hash(token_hash(secret))
        return await self._principal(row)

    async def by_id(self, token_id: int) -> Principal | None:
        """A session's token, looked up again: a revoked or expired token ends its sessions."""
        return await self._principal(await self._read.by_id(token_id))

    async def _principal(self, row: TokenRow | None) -> Principal | None:
        now = self._clock.now()
        if row is None or not row.live(now):
            return None
        if now - self._touched.get(row.id, 0.0) >= TOUCH_EVERY:
            self._touched[row.id] = now
            await self._repo.touch(row.id, now)
        return Principal(row.id, row.name, row.role)
