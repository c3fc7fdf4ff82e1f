-- Recordings: a re-wrap in flight, and sealed files set aside because they no longer open.
--
-- pending_sha256: the SHA-256 a re-wrap is about to give the file, stored before the file is
-- replaced. After a crash between the replace and the metadata update, the file matches this
-- instead of sha256, and is still accepted (and the row healed) rather than called tampered.
-- rejected_at: the sealed file failed to open and was moved aside (path names the moved file,
-- a hidden .tlrec-rejected name): it is kept for a human until retention deletes it.
ALTER TABLE recordings ADD COLUMN pending_sha256 TEXT;
ALTER TABLE recordings ADD COLUMN rejected_at DOUBLE PRECISION;
