"""Recording encryption speed next to `age`, on the same input, in the same run.

Usage: .venv/bin/python bench/recordings.py [--dir WORKDIR] [--recordings 1000] [--gib 1]

Two inputs: one 1 GiB file, and a folder of realistic call recordings built from the real
MixMonitor capture (8 kHz 16-bit mono WAV, 15 s to 4 min each). For each it prints MB/s
(10^6 bytes of plaintext per second, wall clock) for:
- `age` (Debian package, X25519 recipient; one process per file, as a shell loop would run it),
- trustline encrypt: the sealed format alone (read, encrypt, write), the same work age does,
- trustline pipeline: what the agent really does per recording (encrypt + SHA-256 of the
  sealed file, fsync, link, fsync folder, verify by decrypting, store metadata in SQLite,
  delete plaintext), through RecordingsService.sweep for the folder.
The work folder defaults to /dev/shm so the disk's mood does not decide the comparison; pass
--dir to measure on a real disk (both tools then pay the same writes). age is installed with
apt-get if missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.clock import SystemClock
from agent.recordings import RecordingsService, pipeline
from agent.recordings import format as fmt
from agent.recordings.keyring import init_keyring, load_keyring
from agent.settings import load_settings
from agent.store import open_database

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.captures import MIXMONITOR_WAV

CAPTURE = MIXMONITOR_WAV
MB = 1e6
BYTES_PER_SECOND = 16000  # 8 kHz, 16-bit, mono


def ensure_age() -> str:
    found = shutil.which("age")
    if found:
        return found
    print("age not found: installing the Debian package", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "age"], check=True)
    found = shutil.which("age")
    if not found:
        raise SystemExit("age is still missing after apt-get install")
    return found


def best_of(times: int, step: Callable[[], None], reset: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(times):
        reset()
        began = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - began)
    return best


def make_big_file(path: Path, size: int) -> None:
    block = os.urandom(64 * 2**20)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n


def make_recordings(folder: Path, count: int) -> int:
    """WAVs cut from the real capture's audio, looped to realistic call lengths."""
    wav = CAPTURE.read_bytes()
    pcm = wav[44:]
    rng = random.Random(5)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        length = rng.randint(15, 240) * BYTES_PER_SECOND
        start = rng.randrange(0, len(pcm) // 2) & ~1
        reps = -(-(length + start) // len(pcm))
        data = (pcm * reps)[start : start + length]
        header = b"RIFF" + struct.pack("<I", 36 + len(data)) + wav[8:40]
        header += struct.pack("<I", len(data))
        (folder / f"{1795344922 + i}.{i}.wav").write_bytes(header + data)
        total += len(header) + len(data)
    return total


def age_files(age: str, recipient: str, files: list[Path], out: Path) -> None:
    for f in files:
        subprocess.run(
            [age, "-r", recipient, "-o", str(out / (f.name + ".age")), str(f)], check=True
        )


def seal_format(files: list[Path], out: Path, key: fmt.SealingKey) -> None:
    for f in files:
        with open(f, "rb") as src, open(out / (f.name + fmt.SUFFIX), "wb") as dst:
            fmt.encrypt_stream(src, dst, key, os.fstat(src.fileno()).st_size)


def clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)


def line(label: str, nbytes: int, seconds: float, age_rate: float | None, note: str = "") -> float:
    rate = nbytes / seconds / MB
    ratio = f"{rate / age_rate:5.2f}x age" if age_rate else " " * 9
    print(f"{label:<52} {rate:8.1f} MB/s  {ratio}  {note}".rstrip(), flush=True)
    return rate


async def pipeline_sweep(work: Path, folder: Path, keyring: Path) -> float:
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    # The files are complete (written before the timing starts): no quiet period to wait out,
    # whether or not this machine lets us see other processes' open files.
    settings = load_settings(
        data_dir=str(data),
        recordings_dir=str(folder),
        keyring=str(keyring),
        recordings_quiet_seconds=0.001,
    )
    db = await open_database(settings.database_path)
    try:
        service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
        began = time.perf_counter()
        report = await service.sweep()
        elapsed = time.perf_counter() - began
    finally:
        await db.close()
    if report.failed or report.busy:
        raise SystemExit(f"sweep did not seal everything: {report}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shm = Path("/dev/shm")
    parser.add_argument("--dir", type=Path, default=shm if shm.is_dir() else None)
    parser.add_argument("--recordings", type=int, default=1000)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for the big file")
    args = parser.parse_args()

    age = ensure_age()
    version = subprocess.run([age, "--version"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="trustline-bench-", dir=args.dir))
    try:
        keys = work / "keys"
        keys.mkdir(mode=0o700)
        keyring = keys / "keyring"
        init_keyring(keyring, time.time())
        ring = load_keyring(keyring)
        identity = keys / "age.key"
        subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
        recipient = subprocess.run(
            ["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True
        ).stdout.strip()
        print(
            f"bench/recordings.py: {os.cpu_count()} cores, work dir {work}, age {version},"
            f" Python {sys.version.split()[0]}"
        )

        big = work / "big.bin"
        size = int(args.gib * 2**30)
        make_big_file(big, size)
        out = work / "out"
        label = f"{args.gib:g} GiB file"
        t_age = best_of(
            args.repeat, lambda: age_files(age, recipient, [big], out), lambda: clear(out)
        )
        r_age = line(f"{label}: age -r (X25519)", size, t_age, None)
        t_fmt = best_of(
            args.repeat, lambda: seal_format([big], out, ring.active), lambda: clear(out)
        )
        line(f"{label}: trustline encrypt (format)", size, t_fmt, r_age)

        def plain_copy() -> None:
            with open(big, "rb") as src, open(out / "copy.bin", "wb") as dst:
                shutil.copyfileobj(src, dst, 2**20)

        # The ceiling on this disk: reading and writing the bytes, no cryptography at all.
        t_copy = best_of(args.repeat, plain_copy, lambda: clear(out))
        line(f"{label}: plain copy (I/O ceiling, no crypto)", size, t_copy, r_age)

        plain = work / "pipe" / "big.wav"

        def reset_pipe() -> None:
            clear(plain.parent)
            os.link(big, plain)  # the pipeline deletes its input: give it a second name

        def seal_pipe() -> None:
            pipeline.seal(plain, ring)
            pipeline.remove_plaintext(plain)

        t_pipe = best_of(args.repeat, seal_pipe, reset_pipe)
        line(
            f"{label}: trustline pipeline (seal+verify)",
            size,
            t_pipe,
            r_age,
            "sha256, fsync, verify by decrypting, unlink",
        )
        big.unlink()
        clear(out)

        folder = work / "monitor"
        total = make_recordings(folder, args.recordings)
        files = sorted(folder.iterdir())
        label = f"{args.recordings} recordings ({total / 1e9:.2f} GB)"
        began = time.perf_counter()
        age_files(age, recipient, files, out)
        r_age = line(f"{label}: age, one process each", total, time.perf_counter() - began, None)
        clear(out)
        began = time.perf_counter()
        seal_format(files, out, ring.active)
        line(f"{label}: trustline encrypt (format)", total, time.perf_counter() - began, r_age)
        clear(out)
        elapsed = asyncio.run(pipeline_sweep(work, folder, keyring))
        line(
            f"{label}: trustline agent sweep",
            total,
            elapsed,
            r_age,
            "pipeline + SQLite metadata, one file at a time",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
