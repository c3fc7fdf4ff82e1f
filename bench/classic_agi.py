"""What one call costs through the classic AGI script trustline-agi, against FastAGI.

Run by hand:  .venv/bin/python bench/classic_agi.py [--calls 40]

One call at a time (Asterisk starts one process per call), p50/p99 wall time of:
  python     - `python -c pass`: the interpreter's own start-up, the floor of any script
  classic    - trustline-agi against a running `trustline run` (real config, SQLite): start-up,
               pyst2 reads the environment, FastAGI to the agent, the answer relayed
  fallback   - trustline-agi with no agent listening: start-up and the AstDB fallback
  fastagi    - the same decision over FastAGI, as AGI(agi://...) does it (no process)
The fake Asterisk speaks the captured bytes (tests/test_classic_agi.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_asterisk import run_session  # noqa: E402
from tests.test_classic_agi import ONE_NUMBER, FakeAsterisk  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def timed(n: int, one: Callable[[], Awaitable[object]]) -> list[float]:
    await one()  # warm the page cache and the agent
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await one()
        out.append((time.perf_counter() - started) * 1000)
    return out


def report(name: str, ms: list[float]) -> None:
    ms.sort()
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name:9s} p50 {statistics.median(ms):7.1f} ms   p99 {p99:7.1f} ms   (n={len(ms)})")


async def python_start() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    n = parser.parse_args().calls
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "pools.toml"
        # A cap no bench run reaches: every call is a real decision ("ok").
        config.write_text(ONE_NUMBER.replace('region = "FR"', 'region = "FR"\ndaily_cap = 100000'))
        agi, http = free_port(), free_port()
        env = {
            **os.environ,
            "TRUSTLINE_CONFIG": str(config),
            "TRUSTLINE_DATA_DIR": str(Path(tmp) / "data"),
            "TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{agi}",
            "TRUSTLINE_HTTP_LISTEN": f"127.0.0.1:{http}",
            "TRUSTLINE_RECORDINGS_DIR": str(Path(tmp) / "none"),
        }
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            for _ in range(100):
                try:
                    await asyncio.open_connection("127.0.0.1", agi)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
            asterisk = FakeAsterisk(astdb={"trustline/fallback/reminder": "+33142000001"})
            up = {"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{agi}"}
            down = {"TRUSTLINE_AGI_LISTEN": f"127.0.0.1:{free_port()}"}
            args = ["outbound", "reminder", "0612345678"]
            call = await asterisk.call(args, env=up)
            assert call.variables.get("TRUSTLINE_STATUS") == "ok", call
            report("python", await timed(n, python_start))
            report("classic", await timed(n, lambda: asterisk.call(args, env=up)))
            report("fallback", await timed(n, lambda: asterisk.call(args, env=down)))
            report(
                "fastagi",
                await timed(n, lambda: run_session("127.0.0.1", agi, args=args[1:])),
            )
        finally:
            agent.terminate()
            agent.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
