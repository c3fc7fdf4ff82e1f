"""``trustline keys ...`` and ``trustline recordings ...``: the keyring and sealed recordings.

May: parse arguments, call the keyring functions and RecordingsService, print results to
stdout and progress to stderr. Must not: print or log key material, print errors (raise them;
agent.cli maps them to exit codes), or decide anything the service decides.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from agent.cli import common_options
from agent.clock import SystemClock, utc
from agent.errors import RecordingError
from agent.recordings.keyring import check_location, init_keyring, load_keyring, rotate_keyring
from agent.recordings.service import RecordingsService
from agent.settings import Settings
from agent.store import open_database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys", parents=[common_options()], help="recordings keyring: init, rotate, list"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    _leaf(keys_sub, "init", "create the keyring (mode 0600) with one active key", _keys_init)
    _leaf(
        keys_sub, "rotate", "add a new active key (older keys stay to open old files)", _keys_rotate
    )
    _leaf(
        keys_sub, "list", "key ids, creation time, the active key, recordings per key", _keys_list
    )

    rec = sub.add_parser(
        "recordings",
        parents=[common_options()],
        help="sealed call recordings: list, verify, decrypt, purge, rewrap",
    )
    rec_sub = rec.add_subparsers(dest="recordings_command", required=True, metavar="ACTION")
    p = _leaf(rec_sub, "list", "recordings with their IDs, newest first", _list)
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
        help="new file for the audio (never overwritten)",
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


def _absolute(value: str) -> Path:
    return Path(os.path.abspath(value))


@asynccontextmanager
async def _service(settings: Settings) -> AsyncIterator[RecordingsService]:
    db = await open_database(settings.database_path)
    try:
        yield RecordingsService(settings, db, SystemClock())
    finally:
        await db.close()


def _when(ts: float | None) -> str:
    return "-" if ts is None else utc(ts).strftime("%Y-%m-%d %H:%M:%SZ")


async def _keys_init(args: argparse.Namespace, settings: Settings) -> int:
    check_location(settings.keyring_path, settings.recordings_dir)
    ring = init_keyring(settings.keyring_path, time.time())
    print(f"created keyring {ring.path} (mode 0600) with active key {ring.active_id}")
    print("back it up somewhere safe: recordings sealed under a lost key cannot be opened")
    return 0


async def _keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
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
    ring = load_keyring(settings.keyring_path)
    async with _service(settings) as service:
        in_use = await service.keys_in_use()
    print(f"{'KEY ID':<22} {'CREATED':<21} {'ACTIVE':<6} RECORDINGS")
    for key in sorted(ring.keys.values(), key=lambda k: k.created):
        active = "yes" if key.key_id == ring.active_id else ""
        print(f"{key.key_id:<22} {_when(key.created):<21} {active:<6} {in_use.get(key.key_id, 0)}")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        rows = await service.listing(limit=args.limit, include_purged=args.all)
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
        results = await service.verify(args.ids or None)
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
    async with _service(settings) as service:
        row = await service.decrypt(args.id, args.out, operator=args.operator, reason=args.reason)
    print(f"recording {row.id} written to {args.out} ({row.plain_size} bytes); access audited")
    return 0


async def _purge(args: argparse.Namespace, settings: Settings) -> int:
    operator = args.operator or f"cli:{getpass.getuser()}"
    async with _service(settings) as service:
        rows = await service.purge_expired(operator=operator, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for r in rows:
        print(f"{verb} {r.id:>6} {r.uniqueid or '-':<20} recorded {_when(r.recorded_at)}")
    print(f"{verb} {len(rows)} recordings older than {settings.retention_days} days")
    return 0


async def _rewrap(args: argparse.Namespace, settings: Settings) -> int:
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if tty:
            filled = int(30 * done / total)
            sys.stderr.write(f"\rrewrap [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(f"rewrap {done}/{total}\n")
        sys.stderr.flush()

    async with _service(settings) as service:
        report = await service.rewrap(progress)
    for failure in report.failures:
        print(f"FAIL  {failure}")
    print(f"re-wrapped {report.rewrapped} of {report.total} recordings under the active key")
    if report.failures:
        raise RecordingError(f"{len(report.failures)} recordings could not be re-wrapped")
    return 0


async def _seal(args: argparse.Namespace, settings: Settings) -> int:
    async with _service(settings) as service:
        row = await service.seal_file(args.file, args.uniqueid)
    print(f"sealed as recording {row.id}")
    return 0
