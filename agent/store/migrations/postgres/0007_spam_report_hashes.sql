-- PostgreSQL twin of ../0007_spam_report_hashes.sql: the same statements (portable SQL).
-- A spam report against a number that is not ours names a stranger's (often a patient's)
-- number: from now on such rows hold the keyed hash of its E.164 (HMAC-SHA256 with the
-- callee-hash key, as call_audit.callee_hash) in `number`, never the number itself. A keyed
-- hash cannot be computed in SQL, so rows stored before this migration keep only the last
-- four digits (the log mask): nothing reads them but a human. Rows for our own numbers
-- (ours = 1) keep the E.164: those are the centre's caller IDs, not personal data.
UPDATE spam_reports SET number = '***' || substr(number, length(number) - 3) WHERE ours = 0;
