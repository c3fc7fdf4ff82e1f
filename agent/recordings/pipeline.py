"""Blocking, crash-safe file steps on the recordings folder; the service runs them in a thread.

May: read plaintext recordings, write sealed files through a temp file beside the target
(fsync, link, fsync the folder), check what was written (FORMAT.md, "Sealing"), verify by
decrypting, delete plaintext that is proven sealed,
delete its own temp files, move aside (under a fresh name) a sealed file that fails to open,
read /proc to see which files another process holds open, take the folder's flock.
Must not: delete a plaintext whose sealed copy has not been verified, delete a sealed file
(but for retention), overwrite any file, talk to the database, log recording content or keys.
A SIGKILL between any two lines leaves every recording complete as plaintext, as a verified
sealed file, or both (resolved later).

The steps live by job, each with its own rules: ``folder`` (names, scan, /proc, the flock,
temp files), ``seal_steps`` (seal, set aside, remove a proven plaintext, retention's delete),
``access_steps`` (verify, decrypt, re-wrap); this module names them all in one place.
"""

from __future__ import annotations

from agent.recordings.access_steps import (
    Interrupted,
    MetadataMismatch,
    PreparedRewrap,
    commit_rewrap,
    decrypt_stream_to,
    decrypt_to,
    discard_rewrap,
    open_unnamed,
    prepare_rewrap,
    remove_parts,
    verify,
)
from agent.recordings.folder import (
    AUDIO_SUFFIXES,
    LOCK_NAME,
    PART_MARK,
    REJECTED_MARK,
    REWRAP_MARK,
    TEMP_MARK,
    Scan,
    Survey,
    is_plaintext_name,
    open_folder_lock,
    open_paths,
    plain_path,
    rejected_origin,
    remove_temps,
    scan,
    sealed_path,
    settle_state,
    settled,
    survey,
    try_lock,
    uniqueid_from_name,
)
from agent.recordings.seal_steps import (
    PlaintextConflict,
    Sealed,
    delete_sealed,
    describe,
    remove_plaintext,
    seal,
    set_aside,
)

__all__ = [
    "AUDIO_SUFFIXES",
    "LOCK_NAME",
    "PART_MARK",
    "REJECTED_MARK",
    "REWRAP_MARK",
    "TEMP_MARK",
    "Interrupted",
    "MetadataMismatch",
    "PlaintextConflict",
    "PreparedRewrap",
    "Scan",
    "Sealed",
    "Survey",
    "commit_rewrap",
    "decrypt_stream_to",
    "decrypt_to",
    "delete_sealed",
    "describe",
    "discard_rewrap",
    "is_plaintext_name",
    "open_folder_lock",
    "open_paths",
    "open_unnamed",
    "plain_path",
    "prepare_rewrap",
    "rejected_origin",
    "remove_parts",
    "remove_plaintext",
    "remove_temps",
    "scan",
    "seal",
    "sealed_path",
    "set_aside",
    "settle_state",
    "settled",
    "survey",
    "try_lock",
    "uniqueid_from_name",
    "verify",
]
