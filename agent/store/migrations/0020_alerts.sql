-- Alert incidents and their webhook outbox (agent/alerts). One open incident per (kind, subject):
-- raising it again updates last_seen and payload, it does not send again. Times are UTC epoch s.
-- (The older "alerts" table of 0001 stays: the outbound engine's own log of what it raised.)
CREATE TABLE alert_incidents (
    id              INTEGER PRIMARY KEY,
    kind            TEXT NOT NULL,           -- number_drift, pool_exhausted, ami_down, ...
    subject         TEXT NOT NULL,           -- pool name, own number (E.164), "agent"
    severity        TEXT NOT NULL,           -- critical | warning | info
    first_seen      REAL NOT NULL,
    last_seen       REAL NOT NULL,
    resolved_at     REAL,
    acked_at        REAL,
    payload         TEXT NOT NULL,           -- JSON: message and evidence; never a patient number
    idempotency_key TEXT NOT NULL UNIQUE
);
CREATE UNIQUE INDEX alert_incidents_open ON alert_incidents (kind, subject)
    WHERE resolved_at IS NULL;
CREATE INDEX alert_incidents_seen ON alert_incidents (first_seen);

-- One row per message per webhook; the body is fixed when queued so a re-send is identical.
CREATE TABLE alert_outbox (
    id              INTEGER PRIMARY KEY,
    incident_id     INTEGER REFERENCES alert_incidents (id), -- NULL: a weekly report
    webhook         TEXT NOT NULL,           -- URL as configured
    event           TEXT NOT NULL,           -- raised | resolved | report
    idempotency_key TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,           -- also the lease of a send in flight
    attempts        INTEGER NOT NULL DEFAULT 0,
    delivered_at    REAL,
    gave_up_at      REAL,
    last_error      TEXT
);
CREATE UNIQUE INDEX alert_outbox_key ON alert_outbox (idempotency_key, webhook);
CREATE INDEX alert_outbox_due ON alert_outbox (delivered_at, gave_up_at, next_attempt_at);
