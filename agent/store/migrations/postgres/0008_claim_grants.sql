-- PostgreSQL twin of ../0008_claim_grants.sql: the same statements (portable SQL).
-- Claims take several units of a number's daily cap in one statement (one per call waiting on
-- that number, plus a small lease the agent holds in memory). `granted` is how many units the
-- last claim took: an UPDATE's SET expressions all read the row as it was, so one statement
-- both caps the grant at what is left and reports it (portable: no MIN/LEAST, no OLD.*).
ALTER TABLE daily_usage ADD COLUMN granted INTEGER NOT NULL DEFAULT 0;
