"""Seeing who still writes a recording: /proc when it can tell, a long quiet period when not.

The agent may not see Asterisk's processes (its own PID namespace in a container, another
user, Yama or hidepid). Then "nobody holds the file open" is unknown, not true: the sweep
seals a file nobody reported complete only after TRUSTLINE_RECORDINGS_QUIET_SECONDS without
a change, while AMI's hangup or the post-command still seal after the short settle time.

The fake Asterisk is a real process of another user holding the file open; a "process view"
is a folder of links to real /proc/<pid> entries, standing for a PID namespace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.clock import FrozenClock
from agent.recordings import RecordingsService, pipeline
from agent.recordings.keyring import init_keyring
from agent.settings import Settings, load_settings
from agent.store import Database, open_database
from tests.fake_proc import proc_view

ROOT = Path(__file__).resolve().parents[1]
UID = "1795344922.29"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs a fake Asterisk as another user")

_HOLDER = """
import os, sys
f = open(sys.argv[1], "ab")
os.setgid(65534)
os.setuid(65534)
print("open", flush=True)
for line in sys.stdin:
    f.write(line.encode())
    f.flush()
"""


class FakeAsterisk:
    """A process of another user (like Asterisk) holding a recording open for writing."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        assert self.proc.stdout.readline().strip() == "open"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()


@pytest.fixture
def asterisk() -> Iterator[list[FakeAsterisk]]:
    started: list[FakeAsterisk] = []
    yield started
    for a in started:
        a.close()


def hold(started: list[FakeAsterisk], path: Path) -> FakeAsterisk:
    a = FakeAsterisk(path)
    started.append(a)
    return a


def recent(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "monitor").mkdir()
    s = load_settings(
        data_dir=str(tmp_path / "data"),
        recordings_dir=str(tmp_path / "monitor"),
        keyring=str(tmp_path / "data" / "keyring"),
    )
    assert s.recordings_quiet_seconds == 600  # the default under test
    init_keyring(s.keyring_path, time.time())
    return s


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = await open_database(settings.database_path)
    yield database
    await database.close()


def test_open_paths_is_unknown_unless_it_can_see_another_users_process(
    tmp_path: Path, asterisk: list[FakeAsterisk]
) -> None:
    folder = tmp_path / "monitor"
    folder.mkdir()
    plain = folder / f"{UID}.wav"
    plain.write_bytes(b"RIFF")
    writer = hold(asterisk, plain)
    # Our own PID namespace: only our processes, all ours. "Nobody holds it" would be a lie.
    assert pipeline.open_paths(folder, proc_view(tmp_path, os.getpid())) is None
    # Asterisk's PID namespace shared (--pid=container:asterisk): the writer is seen.
    seen = pipeline.open_paths(folder, proc_view(tmp_path, os.getpid(), writer.pid))
    assert seen == {str(plain.resolve())}
    writer.close()
    other = hold(asterisk, tmp_path / "elsewhere.wav")  # another user, nothing in the folder
    assert pipeline.open_paths(folder, proc_view(tmp_path, os.getpid(), other.pid)) == set()


_OBSERVER = """
import os, sys
from pathlib import Path
from agent.recordings import pipeline  # imported first: the stdlib may be under /root
os.setgid(65533)
os.setuid(65533)
print(repr(pipeline.open_paths(Path(sys.argv[1]), Path(sys.argv[2]))))
"""


def test_open_paths_is_unknown_when_a_descriptor_link_is_refused() -> None:
    # A process whose fd folder can be listed but whose links cannot be read (the kernel's
    # ptrace check; here a folder without search permission, read by an unprivileged user).
    base = Path(tempfile.mkdtemp(prefix="trustline-proc-"))
    try:
        base.chmod(0o755)
        folder = base / "monitor"
        folder.mkdir(mode=0o755)
        (folder / f"{UID}.wav").write_bytes(b"RIFF")
        view = base / "proc"
        fds = view / "4242" / "fd"
        fds.mkdir(parents=True)
        (view / "4242" / "status").write_text("Name:\tasterisk\nUid:\t100\t100\t100\t100\n")
        (fds / "7").symlink_to(folder / f"{UID}.wav")
        for d in (view, view / "4242"):
            d.chmod(0o755)
        fds.chmod(0o444)  # listable, links unreadable
        out = subprocess.run(
            [sys.executable, "-c", _OBSERVER, str(folder), str(view)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        )
        assert out.stdout.strip() == "None", out
    finally:
        fds.chmod(0o755)
        shutil.rmtree(base)


async def test_unseen_writer_pausing_is_not_sealed_by_the_sweep_but_hangup_seals_it(
    settings: Settings, db: Database, tmp_path: Path, asterisk: list[FakeAsterisk]
) -> None:
    folder = settings.recordings_dir
    plain = folder / f"{UID}.wav"
    plain.write_bytes(b"A" * 16000)
    writer = hold(asterisk, plain)
    recent(plain, 30)  # the call is on hold: nothing written for half a minute
    old = folder / "1795340000.1.wav"
    old.write_bytes(b"B" * 1000)
    recent(old, 700)  # untouched for longer than the quiet period: finished long ago
    alone = proc_view(tmp_path, os.getpid())  # Asterisk invisible
    svc = RecordingsService(
        settings, db, FrozenClock(time.time()), settle_seconds=2.0, poll_seconds=0.02, proc=alone
    )
    report = await svc.sweep(at_startup=False)
    assert (report.sealed, report.busy) == (1, 1)
    assert plain.read_bytes() == b"A" * 16000 and not pipeline.sealed_path(plain).exists()
    assert not old.exists()
    await asyncio.sleep(0.3)  # the sweep's wait for it does not give up on the quiet period
    assert plain.exists()
    writer.write("more audio")
    writer.close()
    recent(plain, 3)  # MixMonitor closed it a moment ago, then AMI's Hangup arrives
    await svc.on_recording_complete(UID, f"{UID}.wav")
    await svc.wait_idle()
    assert not plain.exists()
    rows = {r.uniqueid: r for r in await svc.listing()}
    assert rows[UID].plain_size == 16000 + len("more audio\n")


async def test_seen_writer_is_waited_for_and_a_seen_idle_folder_needs_no_quiet_period(
    settings: Settings, db: Database, tmp_path: Path, asterisk: list[FakeAsterisk]
) -> None:
    folder = settings.recordings_dir
    plain = folder / f"{UID}.wav"
    plain.write_bytes(b"A" * 1000)
    writer = hold(asterisk, plain)
    done = folder / "1795340000.1.wav"
    done.write_bytes(b"B" * 1000)
    recent(done, 5)
    main = hold(asterisk, tmp_path / "asterisk.ctl")  # Asterisk itself, running on
    view = proc_view(tmp_path, os.getpid(), writer.pid, main.pid)
    svc = RecordingsService(
        settings, db, FrozenClock(time.time()), settle_seconds=2.0, poll_seconds=0.02, proc=view
    )
    recent(plain, 30)
    report = await svc.sweep(at_startup=False)
    assert (report.sealed, report.busy) == (1, 1)  # seen open: busy, however quiet
    assert plain.exists() and not done.exists()
    writer.close()
    await svc.wait_idle()  # seen closed and settled: sealed without the quiet period
    assert not plain.exists()


_SWEEP_IN_OWN_NAMESPACE = """
import asyncio
from agent.clock import SystemClock
from agent.recordings import RecordingsService
from agent.settings import load_settings
from agent.store import open_database

async def main() -> None:
    settings = load_settings()
    db = await open_database(settings.database_path)
    report = await RecordingsService(settings, db, SystemClock()).sweep(at_startup=False)
    print(report.sealed, report.busy, flush=True)
    await db.close()

asyncio.run(main())
"""


def _own_pid_namespace() -> list[str] | None:
    cmd = ["unshare", "--pid", "--fork", "--mount-proc"]
    try:
        ok = subprocess.run([*cmd, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return None
    return cmd if ok else None


def test_agent_in_its_own_pid_namespace_does_not_seal_a_recording_being_written(
    settings: Settings, asterisk: list[FakeAsterisk]
) -> None:
    # What docker/Dockerfile's container does without --pid=container:asterisk: a real new
    # PID namespace with its own /proc, Asterisk (here the fake) outside it.
    cmd = _own_pid_namespace()
    if cmd is None:
        pytest.skip("cannot create a PID namespace here (needs CAP_SYS_ADMIN)")
    plain = settings.recordings_dir / f"{UID}.wav"
    plain.write_bytes(b"A" * 16000)
    writer = hold(asterisk, plain)
    recent(plain, 6)  # unbridged for six seconds: longer than the 2 s settle time
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTLINE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        TRUSTLINE_DATA_DIR=str(settings.data_dir),
        TRUSTLINE_RECORDINGS_DIR=str(settings.recordings_dir),
        TRUSTLINE_KEYRING=str(settings.keyring_path),
    )
    out = subprocess.run(
        [*cmd, sys.executable, "-c", _SWEEP_IN_OWN_NAMESPACE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["0", "1"], out
    assert plain.read_bytes() == b"A" * 16000
    assert not pipeline.sealed_path(plain).exists()
    writer.close()
