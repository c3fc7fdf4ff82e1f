-- Patient contact (agent/contact): the SMS outbox, pinned caller IDs, the CNAM registry.
-- Local presence is by département now (agent/contact/presence.py): the area keys stored by
-- 0009 were the five zones; forget them so the agent computes the new ones at its next start.
UPDATE numbers SET presence = NULL;
-- Times are UTC epoch seconds. No patient number in clear: the outbox keeps the destination
-- and the text sealed (AES-GCM, key derived from the callee-hash key) only until the message
-- is sent or given up, then wipes them; pins and outbox rows know the callee by keyed hash.
CREATE TABLE contact_sms_outbox (
    id              INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,    -- one message per announce, however often queued
    purpose         TEXT NOT NULL,
    pool            TEXT,
    callee_hash     TEXT NOT NULL,           -- HMAC-SHA256 of the patient's E.164
    sealed          TEXT,                    -- base64(nonce | AES-GCM(destination, text)); NULL once done
    created_at      REAL NOT NULL,
    send_at         REAL NOT NULL,           -- not before (planned call time - lead)
    expires_at      REAL NOT NULL,           -- not after (the planned call time)
    next_attempt_at REAL NOT NULL,           -- also the lease of a send in flight
    attempts        INTEGER NOT NULL DEFAULT 0,
    sent_at         REAL,
    gave_up_at      REAL,
    last_error      TEXT,                    -- "HTTP 429", "timeout": never a number or a text
    provider_ref    TEXT                     -- the provider's message id
);
CREATE INDEX contact_sms_outbox_due ON contact_sms_outbox (sent_at, gave_up_at, next_attempt_at);

-- A caller ID promised to a patient (the SMS names it): the next call for this callee and
-- purpose presents it while the pin holds and the number is healthy.
CREATE TABLE contact_pins (
    id             INTEGER PRIMARY KEY,
    callee_hash    TEXT NOT NULL,
    purpose        TEXT NOT NULL,
    pool           TEXT NOT NULL,
    number         TEXT NOT NULL,            -- ours (E.164)
    case_ref       TEXT,
    pinned_at      REAL NOT NULL,
    call_at        REAL NOT NULL,            -- the planned call time
    expires_at     REAL NOT NULL,
    reserved_day   TEXT NOT NULL,            -- the pool's local day the cap unit was claimed for
    used_at        REAL,                     -- the call came and presented the number
    released_at    REAL,
    release_reason TEXT                      -- used | expired | unhealthy | replaced
);
CREATE UNIQUE INDEX contact_pins_open ON contact_pins (callee_hash, purpose) WHERE released_at IS NULL;
CREATE INDEX contact_pins_callee ON contact_pins (callee_hash, pinned_at);

-- What the carrier shows for each number, as admins record it (wanted names are in pools.toml).
CREATE TABLE cnam_provisioned (
    id             INTEGER PRIMARY KEY,
    number         TEXT NOT NULL,
    name           TEXT NOT NULL,
    provisioned_on REAL NOT NULL,
    recorded_at    REAL NOT NULL
);
CREATE INDEX cnam_provisioned_number ON cnam_provisioned (number, provisioned_on);
