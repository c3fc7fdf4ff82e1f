-- Reputation lookups of our own numbers (agent/outcomes/scanner.py): every answer kept, so a
-- number's history shows when a provider or a vendor list started (or stopped) flagging it.
CREATE TABLE reputation_checks (
    id         INTEGER PRIMARY KEY,
    number     TEXT NOT NULL,                -- our own number, E.164
    checked_at REAL NOT NULL,                -- UTC epoch seconds
    source     TEXT NOT NULL,                -- provider name, or "csv:<file name>"
    score      REAL,
    label      TEXT,
    flagged    INTEGER NOT NULL              -- 1 when the thresholds say "flagged"
);
CREATE INDEX reputation_checks_number ON reputation_checks (number, checked_at);
