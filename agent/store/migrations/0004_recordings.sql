-- Recordings at rest: metadata of sealed recordings and the audit of who opened or deleted one.
-- Times are UTC epoch seconds (REAL). No key material and no audio ever lands here.

CREATE TABLE recordings (
    id            INTEGER PRIMARY KEY,
    uniqueid      TEXT,                      -- Asterisk UNIQUEID; NULL when the sweep cannot tell
    path          TEXT NOT NULL,             -- the sealed file (absolute)
    source_name   TEXT NOT NULL,             -- plaintext name, relative to the recordings folder
    recorded_at   REAL NOT NULL,             -- last write of the plaintext: the end of the call
    sealed_at     REAL NOT NULL,
    plain_size    INTEGER NOT NULL,
    size          INTEGER NOT NULL,          -- bytes of the sealed file
    key_id        TEXT NOT NULL,             -- keyring key that wraps its data key
    sha256        TEXT NOT NULL,             -- hex SHA-256 of the sealed file
    purged_at     REAL                       -- set when retention deleted the file
);
-- One live row per file; purged rows stay so IDs in audit records keep their meaning.
CREATE UNIQUE INDEX recordings_live_path ON recordings (path) WHERE purged_at IS NULL;
CREATE INDEX recordings_uniqueid ON recordings (uniqueid);
CREATE INDEX recordings_recorded_at ON recordings (recorded_at);

CREATE TABLE recording_audit (
    id           INTEGER PRIMARY KEY,
    at           REAL NOT NULL,
    action       TEXT NOT NULL,              -- decrypt | purge
    recording_id INTEGER NOT NULL REFERENCES recordings (id),
    operator     TEXT NOT NULL,              -- who (CLI --operator, API token owner, "retention")
    reason       TEXT NOT NULL,              -- why
    outcome      TEXT NOT NULL,              -- started | ok | failed: <error class>
    detail       TEXT NOT NULL DEFAULT ''    -- JSON: what was written or deleted
);
CREATE INDEX recording_audit_recording ON recording_audit (recording_id, at);
