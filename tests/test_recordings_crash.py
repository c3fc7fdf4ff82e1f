"""SIGKILL the sealing process at random moments: no recording is ever lost or doubled.

Each run copies a few small recordings (cut from the real MixMonitor capture) into a fresh
folder, starts a real agent process that sweeps them, kills it with SIGKILL after a random
delay, checks nothing was lost, then restarts the sweep and checks every recording exists
exactly once, sealed, verified, with one metadata row.

The killed processes are forked from a warmed fork server (one Python process that has
already imported the agent), so a kill point costs one sweep, not a Python start-up: the
same 120 kill points fit well inside the per-test timeout on a busy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import secrets
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from agent.clock import SystemClock
from agent.recordings import RecordingsService, pipeline
from agent.recordings import format as fmt
from agent.recordings.keyring import Keyring, init_keyring, load_keyring, rotate_keyring
from agent.settings import load_settings
from agent.store import open_database
from tests.captures import MIXMONITOR_WAV

CAPTURE = MIXMONITOR_WAV
RUNS = 120
PARALLEL = 2
FILES_PER_RUN = 5
CHUNK = 1024  # many small writes per file, so kills land inside sealing as often as between

# One process imports the agent once, then forks a child per run: each child sets its run's
# environment, reports "ready <pid>" on the run's FIFO, runs the job, and reports "done".
FORK_SERVER = """
import asyncio, json, os, signal, sys
from agent.clock import SystemClock
from agent.recordings import RecordingsService
from agent.settings import load_settings
from agent.store import open_database

async def job(kind: str, status) -> None:
    settings = load_settings()
    db = await open_database(settings.database_path)
    if kind == "sweep":
        service = RecordingsService(settings, db, SystemClock(), settle_seconds=0, chunk_size=CHUNK)
    else:
        service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
    status.write(f"ready {os.getpid()}\\n")
    status.flush()
    with open(status.name + ".go", "rb") as go:  # the test holds a pidfd on us now
        go.read(1)
    await (service.sweep() if kind == "sweep" else service.rewrap())
    await db.close()
    status.write("done\\n")
    status.flush()

signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
print("warm", flush=True)
for line in sys.stdin:
    order = json.loads(line)
    if os.fork() == 0:
        for name in [n for n in os.environ if n.startswith("TRUSTLINE_")]:
            del os.environ[name]
        os.environ.update(order["env"])
        with open(order["fifo"], "w") as status:
            asyncio.run(job(order["job"], status))
        os._exit(0)
""".replace("CHUNK", str(CHUNK))


class ForkServer:
    """The warmed parent of every killed process (a real, separate Python process)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", FORK_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None and self._proc.stdout.readline().strip() == "warm"
        self._lock = threading.Lock()

    def run(self, job: str, run: Run, keyring: Path, delay: float | None) -> float:
        """Fork a child doing ``job`` on ``run``; SIGKILL it ``delay`` s after it is ready."""
        fifo = run.folder.parent / f"status-{secrets.token_hex(4)}"
        go = fifo.with_name(fifo.name + ".go")
        os.mkfifo(fifo)
        os.mkfifo(go)
        order = {"job": job, "fifo": str(fifo), "env": child_env(run, keyring)}
        with self._lock:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(order) + "\n")
            self._proc.stdin.flush()
        with open(fifo) as status:
            word, pid = status.readline().split()
            assert word == "ready"
            # A pidfd while the child waits for "go": a kill can never hit a reused pid.
            child = os.pidfd_open(int(pid))
            try:
                with open(go, "wb") as start:
                    start.write(b"g")
                began = time.monotonic()
                if delay is None:
                    assert status.readline().strip() == "done"
                    elapsed = time.monotonic() - began
                else:
                    time.sleep(delay)
                    with contextlib.suppress(ProcessLookupError):  # it finished first
                        signal.pidfd_send_signal(child, signal.SIGKILL)
                    elapsed = delay
                status.read()  # end of file: the child's descriptors are closed
                select.select([child], [], [], 30)  # and it has exited
            finally:
                os.close(child)
        fifo.unlink()
        go.unlink()
        return elapsed

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(timeout=30)


@pytest.fixture
def forks() -> Iterator[ForkServer]:
    server = ForkServer()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Run:
    index: int
    folder: Path
    data: Path
    originals: dict[str, bytes]


def make_run(base: Path, index: int, template_db: Path, audio: bytes) -> Run:
    root = base / f"run{index:03d}"
    folder, data = root / "monitor", root / "data"
    folder.mkdir(parents=True)
    data.mkdir()
    shutil.copyfile(template_db, data / "trustline.sqlite3")
    originals = {}
    rng = random.Random(index)
    for j in range(FILES_PER_RUN):
        start = rng.randrange(0, len(audio) // 2)
        body = audio[start : start + rng.randrange(4_000, 40_000)]
        name = f"17950{index:05d}.{j}.wav"
        (folder / name).write_bytes(body)
        originals[name] = body
    return Run(index, folder, data, originals)


def child_env(run: Run, keyring: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    env.update(
        TRUSTLINE_DATA_DIR=str(run.data),
        TRUSTLINE_RECORDINGS_DIR=str(run.folder),
        TRUSTLINE_KEYRING=str(keyring),
        # Not about seeing who writes a file: settled files are ready at once.
        TRUSTLINE_RECORDINGS_QUIET_SECONDS="0.001",
    )
    return env


def opens_to(path: Path, ring: Keyring) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as f:
        fmt.decrypt_stream(f, out, dict(ring.keys), name=path.name)
    return out.getvalue()


def check_nothing_lost(run: Run, ring: Keyring) -> str:
    """Right after the kill: each recording is complete plaintext, verified sealed, or both."""
    states = []
    for name, body in run.originals.items():
        plain, sealed = run.folder / name, run.folder / (name + fmt.SUFFIX)
        if plain.exists():
            assert plain.read_bytes() == body, f"run {run.index}: {name} plaintext damaged"
            states.append("both" if sealed.exists() else "plain")
        else:
            assert sealed.exists(), f"run {run.index}: {name} lost"
            assert opens_to(sealed, ring) == body, f"run {run.index}: {name} sealed wrong"
            states.append("sealed")
    kinds = set(states)
    return "both" if "both" in kinds else "mixed" if len(kinds) > 1 else states[0]


async def restart_and_check(run: Run, keyring: Path, ring: Keyring) -> None:
    settings = load_settings(
        data_dir=str(run.data),
        recordings_dir=str(run.folder),
        keyring=str(keyring),
        recordings_quiet_seconds=0.001,
    )
    db = await open_database(settings.database_path)
    try:
        service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
        report = await service.sweep()
        assert report.failed == 0 and report.busy == 0, (run.index, report)
        files = sorted(p.name for p in run.folder.iterdir() if p.name != pipeline.LOCK_NAME)
        assert files == sorted(n + fmt.SUFFIX for n in run.originals), (run.index, files)
        rows = await service.listing(limit=1000, include_purged=True)
        assert len(rows) == len(run.originals), (run.index, [r.path for r in rows])
        by_path = {r.path: r for r in rows}
        for name, body in run.originals.items():
            sealed = run.folder / (name + fmt.SUFFIX)
            assert opens_to(sealed, ring) == body
            row = by_path[str(sealed)]
            assert row.sha256 == digest_of(str(sealed))
            assert row.plain_size == len(body) and row.uniqueid == name[: -len(".wav")]
        assert [v.problem for v in await service.verify()] == [None] * len(run.originals)
    finally:
        await db.close()


async def test_sigkill_at_random_points_never_loses_or_doubles_a_recording(
    tmp_path: Path, forks: ForkServer
) -> None:
    audio = CAPTURE.read_bytes()
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    keyring = keys / "keyring"
    init_keyring(keyring, time.time())
    ring = load_keyring(keyring)
    template = tmp_path / "template.sqlite3"
    db = await open_database(template)
    await db.close()

    # Calibrate: how long does an undisturbed sweep of one run take on this machine?
    timings = []
    for n in range(3):
        calib = make_run(tmp_path, 900 + n, template, audio)
        timings.append(await asyncio.to_thread(forks.run, "sweep", calib, keyring, None))
        await restart_and_check(calib, keyring, ring)
    full = max(min(timings), 0.005)

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Up to twice the undisturbed time: two runs share the cores, so some still finish.
    delays = [rng.uniform(0, full * 2) for _ in range(RUNS)]
    outcomes: list[str] = []
    gate = asyncio.Semaphore(PARALLEL)

    async def one(index: int) -> None:
        async with gate:
            run = make_run(tmp_path, index, template, audio)
            await asyncio.to_thread(forks.run, "sweep", run, keyring, delays[index])
            outcomes.append(check_nothing_lost(run, ring))
            await restart_and_check(run, keyring, ring)
            shutil.rmtree(run.folder.parent)

    await asyncio.gather(*(one(i) for i in range(RUNS)))
    summary = {k: outcomes.count(k) for k in ("plain", "mixed", "both", "sealed")}
    print("kill outcomes", seed, round(full, 3), summary)
    assert len(outcomes) == RUNS
    # The kills really did land mid-sweep, not only before or after it.
    assert summary["mixed"] + summary["both"] >= RUNS // 4, (seed, full, summary)


REWRAP_RUNS = 30


async def sealed_run(base: Path, index: int, template_db: Path, audio: bytes) -> tuple[Run, Path]:
    """A run whose recordings are sealed under one key, with a newer key now active."""
    run = make_run(base, index, template_db, audio)
    keys = run.folder.parent / "keys"
    keys.mkdir(mode=0o700)
    keyring = keys / "keyring"
    init_keyring(keyring, time.time())
    settings = load_settings(
        data_dir=str(run.data),
        recordings_dir=str(run.folder),
        keyring=str(keyring),
        recordings_quiet_seconds=0.001,
    )
    db = await open_database(settings.database_path)
    try:
        report = await RecordingsService(settings, db, SystemClock(), settle_seconds=0).sweep()
        assert report.sealed == FILES_PER_RUN
    finally:
        await db.close()
    rotate_keyring(keyring, time.time())
    return run, keyring


def digest_of(path: str) -> str:
    """The digest a row keeps of the sealed file at ``path`` (BLAKE3, prefixed)."""
    with open(path, "rb") as f:
        return "blake3:" + blake3.blake3(f.read()).hexdigest()


async def check_after_rewrap_kill(run: Run, keyring: Path) -> bool:
    """Right after the kill every recording verifies and decrypts; a rewrap then finishes."""
    ring = load_keyring(keyring)
    settings = load_settings(
        data_dir=str(run.data),
        recordings_dir=str(run.folder),
        keyring=str(keyring),
        recordings_quiet_seconds=0.001,
    )
    db = await open_database(settings.database_path)
    try:
        service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
        problems = [v.problem for v in await service.verify()]
        assert problems == [None] * FILES_PER_RUN, (run.index, problems)
        rows = await service.listing(limit=1000)
        # Killed mid-rewrap: some files moved to the new key and some not, or one in flight.
        midway = len({r.key_id for r in rows}) > 1 or any(r.pending_sha256 for r in rows)
        for row in rows:
            out = run.data / f"{row.id}.out"
            await service.decrypt(row.id, out, operator="test", reason="after a kill")
            assert out.read_bytes() == run.originals[row.source_name], run.index
            out.unlink()
        await service.sweep()  # start-up: removes a re-wrap's leftover temp file
        report = await service.rewrap()
        assert report.failures == [], (run.index, report)
        for row in await service.listing(limit=1000):
            assert row.key_id == ring.active_id and row.pending_sha256 is None
            assert row.sha256 == digest_of(row.path)
        assert [v.problem for v in await service.verify()] == [None] * FILES_PER_RUN
        names = sorted(p.name for p in run.folder.iterdir() if p.name != pipeline.LOCK_NAME)
        assert names == sorted(n + fmt.SUFFIX for n in run.originals), (run.index, names)
        return midway
    finally:
        await db.close()


async def test_sigkill_during_rewrap_never_makes_a_recording_look_tampered(
    tmp_path: Path, forks: ForkServer
) -> None:
    audio = CAPTURE.read_bytes()
    template = tmp_path / "template.sqlite3"
    db = await open_database(template)
    await db.close()
    timings = []
    for n in range(3):
        run, keyring = await sealed_run(tmp_path, 900 + n, template, audio)
        timings.append(await asyncio.to_thread(forks.run, "rewrap", run, keyring, None))
        await check_after_rewrap_kill(run, keyring)
    full = max(min(timings), 0.005)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    delays = [rng.uniform(0, full * 1.5) for _ in range(REWRAP_RUNS)]
    midway: list[bool] = []
    gate = asyncio.Semaphore(PARALLEL)

    async def one(index: int) -> None:
        async with gate:
            run, keyring = await sealed_run(tmp_path, index, template, audio)
            await asyncio.to_thread(forks.run, "rewrap", run, keyring, delays[index])
            midway.append(await check_after_rewrap_kill(run, keyring))
            shutil.rmtree(run.folder.parent)

    await asyncio.gather(*(one(i) for i in range(REWRAP_RUNS)))
    print("rewrap kills", seed, round(full, 3), "killed midway:", sum(midway))
    assert len(midway) == REWRAP_RUNS
    # The kills really did land mid-rewrap, not only before or after it.
    assert sum(midway) >= REWRAP_RUNS // 4, (seed, full, midway)
