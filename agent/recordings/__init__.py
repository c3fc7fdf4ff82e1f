"""Recordings at rest: MixMonitor WAVs sealed with AES-256-GCM, retention, audited decryption.

Modules, by role:
- ``format``: the versioned, streaming file format (pure crypto + byte layout, no paths policy):
  ``header`` (layout, key wrapping, errors) and ``chunks`` (the AES-GCM chunk stream).
- ``keyring``: the sysadmin's key file (permission checks, init, rotate); the only place keys live.
- ``pipeline``: blocking, crash-safe file steps (seal, verify, resolve leftovers, rewrap):
  ``folder`` (names, scan, /proc, flock), ``seal_steps``, ``access_steps``.
- ``repo``: the SQL for recording metadata and the access/purge audit.
- ``service``: ``RecordingsService``, the facade of the asyncio use cases the agent and the CLI
  call; one module per job: ``sealing``, ``sweep``, ``retention``, ``access`` (verify,
  decrypt, re-wrap), over ``runtime`` (the folder, keyring, store and locks they share).
- ``handoff``: the post-command's Unix socket to the running agent (stdlib only).

Nothing in this package logs key material or recording content.
"""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: the post-command imports this package, and typing alone costs
# it milliseconds on every recorded call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.recordings.service import RecordingsService

__all__ = ["RecordingsService"]


def __getattr__(name: str) -> Any:
    # Lazy, so that the post-command's ``agent.recordings.handoff`` imports nothing heavy.
    if name == "RecordingsService":
        from agent.recordings.service import RecordingsService

        return RecordingsService
    raise AttributeError(name)
