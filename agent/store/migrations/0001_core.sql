-- Outbound engine: numbers, daily usage, rests, reports, quarantine, call audit, alerts.
-- Times are UTC epoch seconds (REAL); days are ISO dates in the number's pool time zone.

CREATE TABLE numbers (
    number        TEXT PRIMARY KEY,          -- E.164
    home_pool     TEXT NOT NULL,             -- pool in pools.toml
    serving_pool  TEXT,                      -- pool a reserve number was promoted into, else NULL
    promoted_at   REAL,
    active        INTEGER NOT NULL DEFAULT 1, -- 0 when removed from pools.toml
    last_used_at  REAL
);

CREATE TABLE daily_usage (
    number TEXT NOT NULL,
    day    TEXT NOT NULL,
    used   INTEGER NOT NULL,
    cap    INTEGER NOT NULL,                 -- the cap in force at the last claim
    PRIMARY KEY (number, day)
);

CREATE TABLE rests (
    id        INTEGER PRIMARY KEY,
    number    TEXT NOT NULL,
    starts_at REAL NOT NULL,
    ends_at   REAL NOT NULL,
    reason    TEXT NOT NULL
);
CREATE INDEX rests_number ON rests (number, ends_at);

CREATE TABLE spam_reports (
    id          INTEGER PRIMARY KEY,
    number      TEXT NOT NULL,               -- E.164 of the reported caller ID (ours or not)
    reported_at REAL NOT NULL,
    day         TEXT NOT NULL,
    source      TEXT NOT NULL,
    ours        INTEGER NOT NULL
);
CREATE INDEX spam_reports_number_day ON spam_reports (number, day);

CREATE TABLE quarantines (
    number      TEXT PRIMARY KEY,
    since       REAL NOT NULL,
    until       REAL NOT NULL,
    reason      TEXT NOT NULL
);

CREATE TABLE call_audit (
    id          INTEGER PRIMARY KEY,
    at          REAL NOT NULL,
    uniqueid    TEXT,
    purpose     TEXT NOT NULL,
    pool        TEXT,
    number      TEXT,                        -- the caller ID handed out (ours), NULL when none
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    callee_hash TEXT,                        -- HMAC-SHA256 of the callee's E.164, never the number
    case_ref    TEXT
);
CREATE INDEX call_audit_uniqueid ON call_audit (uniqueid);
CREATE INDEX call_audit_callee ON call_audit (callee_hash, at);

CREATE TABLE alerts (
    id      INTEGER PRIMARY KEY,
    at      REAL NOT NULL,
    kind    TEXT NOT NULL,
    pool    TEXT,
    message TEXT NOT NULL
);

-- Bumped by every admin-side change (report, reinstate) so running agents re-read state.
CREATE TABLE state_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO state_version (id, version) VALUES (1, 0);
