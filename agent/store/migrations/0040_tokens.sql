-- API and dashboard tokens (agent/tokens): random secrets, only their SHA-256 is stored.
-- Times are UTC epoch seconds. PostgreSQL twin: postgres/0040_tokens.sql.

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,               -- who holds it ("alice"); unique among live tokens
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'auditor', 'admin')),
    token_hash   TEXT NOT NULL UNIQUE,        -- hex SHA-256 of the token, never the token
    created_at   REAL NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   REAL,                        -- NULL: does not expire
    revoked_at   REAL,
    last_used_at REAL                         -- refreshed at most every few minutes
);
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
-- The number and pool pages read one number's (or pool's) outcomes over 30 days.
CREATE INDEX call_audit_number_at ON call_audit (number, at);

