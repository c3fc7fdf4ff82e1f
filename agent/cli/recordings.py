"""``trustline keys ...`` and ``trustline recordings ...``: the keyring and sealed recordings.

May: parse arguments, call the keyring functions and RecordingsService, print results to
stdout and progress to stderr. Must not: print or log key material, print errors (raise them;
agent.cli maps them to exit codes), or decide anything the service decides.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agent.cli import add_json_flag, common_options, offline
from agent.cli.progress import reporter
from agent.clock import SystemClock, utc
from agent.errors import RecordingError
from agent.recordings import handoff

if TYPE_CHECKING:  # the heavy modules load in the handlers: `recordings seal` starts fast
    from agent.recordings.service import RecordingsService
    from agent.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys", parents=[common_options()], help="recordings keyring: init, rotate, list"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    _leaf(keys_sub, "init", "create the keyring (mode 0600) with one active key", _keys_init)
    _leaf(
        keys_sub, "rotate", "add a new active key (older keys stay to open old files)", _keys_rotate
    )
    add_json_flag(
        _leaf(
            keys_sub,
            "list",
            "key ids, creation time, the active key, recordings per key",
            _keys_list,
        )
    )

    rec = sub.add_parser(
        "recordings",
        parents=[common_options()],
        help="sealed call recordings: list, verify, decrypt, purge, rewrap",
    )
    rec_sub = rec.add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    p = _leaf(rec_sub, "list", "recordings with their IDs, newest first", _list)
    add_json_flag(p)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--all", action="store_true", help="include recordings purged by retention")

    p = _leaf(rec_sub, "verify", "authenticate sealed files against their metadata", _verify)
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="default: every recording")

    p = _leaf(rec_sub, "decrypt", "write one recording's audio to a file (audited)", _decrypt)
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument(
        "--out",
        required=True,
        type=_absolute,
        metavar="FILE",
        help="new file for the audio (never overwritten), or - to stream it to"
        " stdout (for a player)",
    )
    p.add_argument("--operator", required=True, help="who is listening (recorded in the audit)")
    p.add_argument("--reason", required=True, help="why (recorded in the audit)")

    p = _leaf(rec_sub, "purge", "delete recordings older than TRUSTLINE_RETENTION_DAYS", _purge)
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.add_argument("--operator", help="recorded in the audit (default: cli:<login>)")

    _leaf(rec_sub, "rewrap", "re-wrap data keys under the active key (audio untouched)", _rewrap)

    p = _leaf(rec_sub, "seal", "seal one finished recording now (MixMonitor post-command)", _seal)
    p.add_argument("file", help="path, absolute or relative to the recordings folder")
    p.add_argument("--uniqueid", help="the channel's UNIQUEID")


def _leaf(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    handler: object,
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(name, help=help_text)
    # The common options again, after the action, but without defaults: argparse copies a
    # sub-parser's defaults over its parent's values, so `trustline keys --data-dir X init`
    # would otherwise lose X.
    parser.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="data folder (env TRUSTLINE_DATA_DIR)"
    )
    parser.add_argument(
        "--config", default=argparse.SUPPRESS, help="pools.toml path (env TRUSTLINE_CONFIG)"
    )
    parser.set_defaults(handler=handler)
    return parser


def _absolute(value: str) -> Path | None:
    """A path made absolute; None for ``-`` (standard output)."""
    return None if value == "-" else Path(os.path.abspath(value))


@asynccontextmanager
async def _service(settings: Settings, *, create: bool = False) -> AsyncIterator[RecordingsService]:
    """The recordings service on the agent's store. Only the post-command's own seal may
    create the store (MixMonitor's files must never stay in plaintext); the admin commands
    say where the store was expected instead."""
    from agent.build import Builder
    from agent.store import open_database

    if create:
        db = await open_database(settings.database, pool_size=settings.database_pool_size)
    else:
        db = await offline.open_admin_store(settings)
    try:
        service = Builder(settings, db, SystemClock()).recordings()
        # A decryption killed earlier (SIGKILL) left an audit row open, maybe a partial file.
        await service.recover_interrupted()
        yield service
    finally:
        await db.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else utc(ts).strftime("%Y-%m-%d %H:%M:%SZ")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else utc(ts).isoformat().replace("+00:00", "Z")


async def _keys_init(args: argparse.Namespace, settings: Settings) -> int:
    from agent.recordings.keyring import check_location, init_keyring

    check_location(settings.keyring_path, settings.recordings_dir)
    ring = init_keyring(settings.keyring_path, time.time())
    print(f"created keyring {ring.path} (mode 0600) with active key {ring.active_id}")
    print("back it up somewhere safe: recordings sealed under a lost key cannot be opened")
    return 0


async def _keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from agent.recordings.keyring import check_location, rotate_keyring

    check_location(settings.keyring_path, settings.recordings_dir)
    ring = rotate_keyring(settings.keyring_path, time.time())
    async with _service(settings) as service:
        in_use = await service.keys_in_use()
    older = sum(n for key_id, n in in_use.items() if key_id != ring.active_id)
    print(f"new active key {ring.active_id}")
    if older:
        print(f"{older} recordings are wrapped by older keys: run `trustline recordings rewrap`")
    return 0


async def _keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from agent.recordings.keyring import load_keyring

    ring = load_keyring(settings.keyring_path)
    async with _service(settings) as service:
        in_use = await service.keys_in_use()
    keys = sorted(ring.keys.values(), key=lambda k: k.created)
    if args.json:
        for k in keys:
            print(
                json.dumps(
                    {
                        "key_id": k.key_id,
                        "created": _iso(k.created),
                        "active": k.key_id == ring.active_id,
                        "recordings": in_use.get(k.key_id, 0),
                    }
                )
            )
        return 0
    print(f"{'KEY ID':<22} {'CREATED':<21} {'ACTIVE':<6} RECORDINGS")
    for key in keys:
        active = "yes" if key.key_id == ring.active_id else ""
        print(f"{key.key_id:<22} {_when(key.created):<21} {active:<6} {in_use.get(key.key_id, 0)}")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        rows = await service.listing(limit=args.limit, include_purged=args.all)
    if args.json:
        for r in rows:
            print(
                json.dumps(
                    {
                        "id": r.id,
                        "uniqueid": r.uniqueid,
                        "recorded_at": _iso(r.recorded_at),
                        "sealed_at": _iso(r.sealed_at),
                        "plain_size": r.plain_size,
                        "size": r.size,
                        "key_id": r.key_id,
                        "state": r.state,
                        "path": r.path,
                        "source_name": r.source_name,
                        "purged_at": _iso(r.purged_at),
                        "rejected_at": _iso(r.rejected_at),
                    }
                )
            )
        return 0
    print(f"{'ID':>6} {'UNIQUEID':<20} {'RECORDED':<21} {'BYTES':>10} {'KEY':<22} STATE")
    for r in rows:
        state = r.state
        if r.purged_at is not None:
            state += " " + _when(r.purged_at)
        elif r.rejected_at is not None:
            state += f" (does not open; kept as {r.path} until retention)"
        print(
            f"{r.id:>6} {r.uniqueid or '-':<20} {_when(r.recorded_at):<21} {r.plain_size:>10}"
            f" {r.key_id:<22} {state}"
        )
    return 0


async def _verify(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        with reporter("verify", unit="rec") as progress:
            results = await service.verify(args.ids or None, progress)
    bad = 0
    for res in results:
        if res.problem is None:
            print(f"ok    {res.recording.id:>6} {res.recording.path}")
        else:
            bad += 1
            print(f"FAIL  {res.recording.id:>6} {res.problem}")
    if bad:
        raise RecordingError(f"{bad} of {len(results)} recordings failed verification")
    print(f"{len(results)} recordings verified")
    return 0


async def _decrypt(args: argparse.Namespace, settings: Settings) -> int:
    # SIGTERM, SIGINT, SIGHUP: stop after the current chunk, leave nothing, audit it.
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with _service(settings) as service:
            out = args.out if args.out is not None else sys.stdout.buffer
            row = await service.decrypt(
                args.id, out, operator=args.operator, reason=args.reason, stop=stop
            )
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if args.out is None:
        sys.stdout.buffer.flush()
        print(
            f"recording {row.id} streamed ({row.plain_size} bytes); access audited", file=sys.stderr
        )
    else:
        print(f"recording {row.id} written to {args.out} ({row.plain_size} bytes); access audited")
    return 0


async def _purge(args: argparse.Namespace, settings: Settings) -> int:
    operator = args.operator or f"cli:{getpass.getuser()}"
    async with _service(settings) as service:
        with reporter("purge", unit="rec") as progress:
            rows = await service.purge_expired(
                operator=operator, dry_run=args.dry_run, progress=progress
            )
    verb = "would delete" if args.dry_run else "deleted"
    for r in rows:
        print(f"{verb} {r.id:>6} {r.uniqueid or '-':<20} recorded {_when(r.recorded_at)}")
    print(f"{verb} {len(rows)} recordings older than {settings.retention_days} days")
    return 0


async def _rewrap(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        with reporter("rewrap", unit="rec") as progress:
            report = await service.rewrap(progress)
    for failure in report.failures:
        print(f"FAIL  {failure}")
    print(f"re-wrapped {report.rewrapped} of {report.total} recordings under the active key")
    if report.failures:
        raise RecordingError(f"{len(report.failures)} recordings could not be re-wrapped")
    return 0


async def _seal(args: argparse.Namespace, settings: Settings) -> int:
    # The running agent seals it (keyring, store and threads already warm); else we do.
    sock = settings.data_dir / handoff.SOCKET_NAME
    try:
        answer = await asyncio.to_thread(handoff.request_seal, sock, args.file, args.uniqueid)
    except handoff.AgentDown:
        async with _service(settings, create=True) as service:
            row = await service.seal_file(args.file, args.uniqueid)
        print(f"sealed as recording {row.id}")
        return 0
    return handoff.report(answer, args.file)
