"""Recording encryption speed next to `age` and a plain copy, same file, same run, interleaved.

Usage: .venv/bin/python bench/recordings.py [--mb 200] [--rounds 5] [--dir WORKDIR]

One random file (200 MB by default). Each round runs every contender once, in turn, on the
same input; each figure is the median over rounds (MB/s = 10^6 bytes of plaintext per
second, wall clock):
- `age` (Debian package, X25519 recipient, one process, file to file): the baseline;
- `cp` (one process, file to file): the I/O ceiling, no cryptography at all;
- trustline encrypt: the sealed format alone, file to file (the work age does);
- trustline pipeline: what the agent does per recording (encrypt on the thread pool +
  SHA-256 of the sealed file, fsync, link, fsync folder, spot check, unlink the plaintext);
- post-command: MixMonitor's `trustline recordings seal FILE` while an agent runs (the file
  is handed over the Unix socket), from process start to exit; and the same through the
  light entry `python -m agent.recordings.handoff FILE`, which imports no more than it needs.
The work folder defaults to /dev/shm, so a disk's mood does not decide the comparison (fsync
is then nearly free); pass --dir for a real disk. age is installed with apt-get if missing.
This machine is shared: expect noise, read the medians. CPU seconds (every thread, and the
`age` and `cp` children; the post-command's work is done in the agent, so it has none) are
printed too: they say what the wall-clock ratios can be once the cores are free.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.recordings import format as fmt
from agent.recordings import pipeline
from agent.recordings.keyring import init_keyring, load_keyring

MB = 1e6
AGENT = """
import asyncio, sys
from agent.clock import SystemClock
from agent.recordings import RecordingsService
from agent.settings import load_settings
from agent.store import open_database

async def main() -> None:
    settings = load_settings()
    db = await open_database(settings.database_path)
    service = RecordingsService(settings, db, SystemClock(), settle_seconds=0)
    server = service.handoff_server()
    assert await server.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.close()
    await db.close()

asyncio.run(main())
"""


def ensure_age() -> str:
    found = shutil.which("age")
    if found:
        return found
    print("age not found: installing the Debian package", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-qq", "age"], check=True)
    found = shutil.which("age")
    if not found:
        raise SystemExit("age is still missing after apt-get install")
    return found


def cpu_seconds() -> float:
    """CPU used by every thread of this process and by its children that have exited."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(step: Callable[[], None]) -> tuple[float, float]:
    """Wall clock and CPU seconds of ``step``."""
    began, used = time.perf_counter(), cpu_seconds()
    step()
    return time.perf_counter() - began, cpu_seconds() - used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    shm = Path("/dev/shm")
    parser.add_argument("--dir", type=Path, default=shm if shm.is_dir() else None)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    age = ensure_age()
    version = subprocess.run([age, "--version"], capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="trustline-bench-", dir=args.dir))
    agent: subprocess.Popen[str] | None = None
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
            f"bench/recordings.py: {os.cpu_count()} cores, {fmt.WORKERS} seal workers,"
            f" work dir {work}, age {version}, Python {sys.version.split()[0]}"
        )
        big = work / "big.bin"
        size = args.mb * 10**6
        with open(big, "wb") as f:
            block = os.urandom(2**20)
            for start in range(0, size, len(block)):
                f.write(block[: min(len(block), size - start)])
        out = work / "out"
        out.mkdir()
        monitor, data = work / "monitor", work / "data"
        monitor.mkdir()
        data.mkdir(mode=0o700)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
        env.update(
            TRUSTLINE_DATA_DIR=str(data),
            TRUSTLINE_RECORDINGS_DIR=str(monitor),
            TRUSTLINE_KEYRING=str(keyring),
            TRUSTLINE_RECORDINGS_QUIET_SECONDS="0.001",
        )
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        serial = iter(range(10**9))

        def age_step() -> None:
            subprocess.run([age, "-r", recipient, "-o", str(out / "x.age"), str(big)], check=True)

        def copy_step() -> None:
            subprocess.run(["cp", str(big), str(out / "x.copy")], check=True)

        def encrypt_step() -> None:
            with open(big, "rb") as src, open(out / "x.tlrec", "wb") as dst:
                fmt.encrypt_file(src.fileno(), dst.fileno(), ring.active, size)

        def fresh_plain() -> Path:
            plain = monitor / f"{1795344922 + next(serial)}.1.wav"
            os.link(big, plain)  # the pipeline deletes its input: give it another name
            return plain

        def pipeline_step(plain: Path) -> None:
            pipeline.seal(plain, ring)
            pipeline.remove_plaintext(plain)

        def post_command(light: bool) -> Callable[[Path], None]:
            entry = (
                ["-m", "agent.recordings.handoff"]
                if light
                else ["-m", "agent", "recordings", "seal"]
            )

            def step(plain: Path) -> None:
                done = subprocess.run(
                    [sys.executable, *entry, str(plain)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                assert "by the running agent" in done.stdout, done.stdout

            return step

        contenders: dict[str, Callable[[], tuple[float, float]]] = {}
        contenders["age"] = lambda: timed(age_step)
        contenders["cp"] = lambda: timed(copy_step)
        contenders["encrypt"] = lambda: timed(encrypt_step)
        for name, step in (
            ("pipeline", pipeline_step),
            ("post-light", post_command(True)),
            ("post-command", post_command(False)),
        ):

            def run(step: Callable[[Path], None] = step) -> tuple[float, float]:
                plain = fresh_plain()
                return timed(lambda: step(plain))

            contenders[name] = run
        times: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run_once in contenders.items():
                for leftover in out.iterdir():
                    leftover.unlink()
                for sealed in monitor.glob(f"*{fmt.SUFFIX}"):
                    sealed.unlink()  # keep /dev/shm small; the store keeps its rows
                wall, used = run_once()
                times[name].append(wall)
                cpu[name].append(used)
        rate = {name: size / statistics.median(t) / MB for name, t in times.items()}
        for name, t in times.items():
            spent = "" if name.startswith("post") else f"  cpu {statistics.median(cpu[name]):.3f} s"
            print(
                f"{name:<13} median {statistics.median(t):6.3f} s  {rate[name]:7.1f} MB/s"
                f"  rounds {' '.join(f'{x:.3f}' for x in t)}{spent}"
            )
        a = rate["age"]
        age_cpu, pipe_cpu = statistics.median(cpu["age"]), statistics.median(cpu["pipeline"])
        cores = os.cpu_count() or 1
        # age works on one thread: on free cores its wall clock is its CPU.
        print(
            f"recordings pipeline CPU {pipe_cpu:.3f} s = {pipe_cpu / age_cpu:.2f}x age's"
            f" {age_cpu:.3f} s: with {cores} free cores at best {pipe_cpu / cores:.3f} s wall"
            f" = {age_cpu / (pipe_cpu / cores):.2f}x of age"
        )
        print(
            f"plain copy (cp): {rate['cp']:.0f} MB/s = {rate['cp'] / a:.2f}x of age"
            f" {a:.0f} MB/s [the I/O ceiling]"
        )
        print(
            f"recordings post-command, light entry: {rate['post-light']:.0f} MB/s"
            f" = {rate['post-light'] / a:.2f}x of age {a:.0f} MB/s [goal >= 1x]"
        )
        for name, label, goal in (
            ("encrypt", "recordings encrypt file to file", 2.0),
            ("pipeline", "recordings pipeline (seal, fsync, check)", 1.5),
            ("post-command", "recordings post-command `trustline recordings seal`", 1.0),
        ):
            print(
                f"{label}: {rate[name]:.0f} MB/s = {rate[name] / a:.2f}x of age {a:.0f} MB/s"
                f" [goal >= {goal:g}x]"
            )
    finally:
        if agent is not None:
            agent.communicate(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
