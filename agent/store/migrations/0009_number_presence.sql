-- The local-presence key of each number (country and area code, from phonenumbers), kept so a
-- restart does not parse every number of a large pool again. '' = the number has no area
-- (mobile, non-geographic); NULL = not computed yet (the agent fills it in).
ALTER TABLE numbers ADD COLUMN presence TEXT;
