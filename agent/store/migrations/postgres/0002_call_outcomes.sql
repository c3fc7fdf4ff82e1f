-- Call outcomes learned over AMI, on the call_audit row of the decision (matched by uniqueid).
-- outcome: answered | busy | no_answer | cancelled | congestion | unavailable | failed
--          | not_dialled (no DialEnd on our channel) | unknown (ended while AMI was down);
-- NULL while the call is in progress or was never seen over AMI.
ALTER TABLE call_audit ADD COLUMN outcome TEXT;
ALTER TABLE call_audit ADD COLUMN dial_status TEXT;          -- DialEnd.DialStatus, raw
ALTER TABLE call_audit ADD COLUMN hangup_cause INTEGER;      -- Hangup.Cause (Q.850)
ALTER TABLE call_audit ADD COLUMN cdr_disposition TEXT;      -- Cdr.Disposition, raw ("NO ANSWER")
ALTER TABLE call_audit ADD COLUMN talk_seconds INTEGER;      -- Cdr.BillableSeconds, else measured
ALTER TABLE call_audit ADD COLUMN linkedid TEXT;
ALTER TABLE call_audit ADD COLUMN ended_at DOUBLE PRECISION;             -- UTC epoch seconds, our clock
-- Answer rates read by time window; re-sync looks for rows still waiting for an outcome.
CREATE INDEX call_audit_at ON call_audit (at);
