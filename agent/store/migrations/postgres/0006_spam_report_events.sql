-- Spam reports raised over AMI carry the UserEvent's Uniqueid: several agents logged in to one
-- PBX each receive the same event, and it must count once. NULL (reports from the CLI or the
-- API) stays distinct in a UNIQUE index, so those are never merged.
ALTER TABLE spam_reports ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX spam_reports_event ON spam_reports (event_id, number);
