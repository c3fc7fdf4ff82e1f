-- Inbound screening: block/allow lists and every decision with its reasons.
-- Decisions never hold a plain caller number: a keyed hash (same key as call_audit.callee_hash)
-- and a masked form for people reading the log.

CREATE TABLE screening_lists (
    kind     TEXT NOT NULL CHECK (kind IN ('allow', 'block')),
    entry    TEXT NOT NULL,                  -- E.164 number, or international prefix ending in '*'
    added_at REAL NOT NULL,
    note     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, entry)
);

-- Bumped by every list change so running agents reload their lists (the CLI is another process).
CREATE TABLE screening_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    lists_version INTEGER NOT NULL
);
INSERT INTO screening_state (id, lists_version) VALUES (1, 0);

CREATE TABLE screening_decisions (
    id            INTEGER PRIMARY KEY,
    at            REAL NOT NULL,
    uniqueid      TEXT,
    dialled       TEXT NOT NULL,             -- our line (E.164) or its masked form if not ours
    caller_hash   TEXT,                      -- HMAC-SHA256 of the caller E.164, NULL if none
    caller_masked TEXT NOT NULL,
    attestation   TEXT NOT NULL,
    score         INTEGER NOT NULL,
    verdict       TEXT NOT NULL,
    reasons       TEXT NOT NULL              -- comma list, as set in TRUSTLINE_REASONS
);
CREATE INDEX screening_decisions_at ON screening_decisions (at);
CREATE INDEX screening_decisions_caller ON screening_decisions (caller_hash, at);
