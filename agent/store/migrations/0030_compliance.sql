-- Compliance: opt-outs (keyed hashes, never numbers), the admin audit, and the hash chain that
-- makes the call, admin and recording audits tamper-evident. Written only by
-- agent/compliance/repo.py. Times are UTC epoch seconds. PostgreSQL twin: postgres/0030_*.sql.

-- One row per (callee, purpose) that must not be called: the current wish.
CREATE TABLE optouts (
    callee_hash TEXT NOT NULL,               -- HMAC-SHA256 of the E.164, same key as call_audit
    purpose     TEXT NOT NULL,
    at          REAL NOT NULL,
    source      TEXT NOT NULL,               -- ivr | cli | api
    PRIMARY KEY (callee_hash, purpose)
);

-- Every opt-out added or removed: the proof a wish was honoured (kept per [retention]).
CREATE TABLE optout_events (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    action      TEXT NOT NULL,               -- add | remove
    callee_hash TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    source      TEXT NOT NULL,
    event_id    TEXT                         -- AMI UserEvent Uniqueid: several agents, one event
);
CREATE UNIQUE INDEX optout_events_event ON optout_events (event_id, callee_hash, purpose, action);
CREATE INDEX optout_events_at ON optout_events (at);

-- Bumped by every opt-out change so running agents reload their opt-out set. No row until the
-- first change (the first bump inserts it): a copied store never meets a seeded row.
CREATE TABLE compliance_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    optout_version INTEGER NOT NULL
);

-- What admins did (opt-outs, purges, ...): who, what, to what. No phone number in clear.
CREATE TABLE admin_audit (
    id     INTEGER PRIMARY KEY,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,                    -- OS login / operator
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''          -- JSON
);
CREATE INDEX admin_audit_at ON admin_audit (at);

-- The hash chain. Each entry: the hash of one audit row (tbl, row_id) or of a retention purge
-- (tbl = 'purge', detail = what was deleted), and prev_hash, the hash of the entry before it.
CREATE TABLE audit_chain (
    seq        INTEGER PRIMARY KEY,
    tbl        TEXT NOT NULL,                -- call_audit | admin_audit | recording_audit | purge
    row_id     INTEGER NOT NULL,
    row_at     REAL NOT NULL,                -- the row's time (a purge: its cutoff)
    row_hash   TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    detail     TEXT
);
CREATE UNIQUE INDEX audit_chain_row ON audit_chain (tbl, row_id) WHERE tbl <> 'purge';

-- The daily anchor: the chain's head at the first chain run of each UTC day, also logged.
CREATE TABLE audit_anchors (
    day       TEXT PRIMARY KEY,              -- UTC date
    seq       INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    at        REAL NOT NULL
);
