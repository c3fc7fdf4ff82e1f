-- One rest per number and window: two agents may both see a number reach its intensive
-- threshold (cap units come in grants) and decide the same rest. Duplicates are dropped first,
-- then the store refuses them (INSERT ... ON CONFLICT DO NOTHING).
DELETE FROM rests WHERE id NOT IN (SELECT MIN(id) FROM rests GROUP BY number, starts_at);
CREATE UNIQUE INDEX rests_window ON rests (number, starts_at);
