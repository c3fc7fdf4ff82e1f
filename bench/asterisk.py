"""What the outbound Gosub adds to a call's set-up on a real Asterisk, measured in its dialplan.

Run by hand, with an Asterisk you built or installed yourself (none ships with this project):
    .venv/bin/python bench/asterisk.py --asterisk /opt/asterisk [--calls 300] [--rounds 5]
``--asterisk`` is the install prefix (``sbin/asterisk``, ``lib/asterisk/modules``). Asterisk
runs as a private instance from a temporary folder (its own config, AstDB, logs and control
socket), next to `trustline run` on the bench config of bench/outbound.py.

One channel (a Local channel originated from the CLI) runs a dialplan loop: each turn reads the
clock (``STRFTIME`` to the microsecond), runs the variant, reads the clock again and logs the
difference, a different callee every turn. The variants, interleaved round by round:
  none     - no Gosub: the dialplan without the agent (the clock's own cost)
  shipped  - Gosub(trustline-outbound,...) from dialplan/trustline.conf: one AGI to the agent,
             the answer in one variable (``?answer=one``) that the subroutine splits
  one      - a bare subroutine: the same one-variable AGI, then Return
  five     - a bare subroutine: the AGI answered in five SET VARIABLE commands (the agent's
             reply without ``?answer=one``), then Return
Every answer is checked: the status must be ``ok`` and the caller ID one of the pool's numbers.
Prints the median and p95 per variant (medians of rounds) and the last line
``asterisk: shipped Gosub adds <ms> median (p95 <ms>); five SET VARIABLE cost <ms> more than one``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.outbound import agent_env, free_port, pools_toml, wait_port  # noqa: E402

VARIANTS = ("none", "shipped", "one", "five")
MODULES = (
    "pbx_config", "res_speech", "res_agi", "app_stack", "app_verbose", "app_exec",
    "func_strings", "func_callerid", "func_db", "func_logic", "func_cut", "res_clioriginate",
)  # fmt: skip
LINE = re.compile(r"BENCH (\w+) (\S+) (\S*) (\S*)$")

EXTENSIONS = """
[globals]
TRUSTLINE_AGI_URL=agi://127.0.0.1:{port}
TRUSTLINE_FALLBACK_CID=+33142000099
OFFSET=0

#include "{dialplan}"

[bench-one]
exten => s,1,AGI(${{TRUSTLINE_AGI_URL}}/outbound?answer=one,${{ARG1}},${{ARG2}},)
 same => n,Set(TRUSTLINE_STATUS=${{CUT(TRUSTLINE_ANSWER,|,1)}})
 same => n,Set(CALLERID(num)=${{CUT(TRUSTLINE_ANSWER,|,4)}})
 same => n,Return()

[bench-five]
exten => s,1,AGI(${{TRUSTLINE_AGI_URL}}/outbound,${{ARG1}},${{ARG2}},)
 same => n,Return()

[bench]
exten => _[1-4],1,Set(i=0)
 same => n,Set(GLOBAL(OFFSET)=$[${{OFFSET}} + 100000])
 same => n,Set(base=${{OFFSET}})
 same => n(loop),Set(CALLERID(num)=)
 same => n,Set(TRUSTLINE_STATUS=)
 same => n,Set(callee=06$[13000000 + ${{base}} + ${{i}}])
 same => n,Set(t0=${{STRFTIME(,,%s.%6q)}})
 same => n,GotoIf($["${{EXTEN}}" = "1"]?done)
 same => n,GotoIf($["${{EXTEN}}" = "2"]?shipped)
 same => n,GotoIf($["${{EXTEN}}" = "3"]?one)
 same => n,Gosub(bench-five,s,1(reminder,${{callee}}))
 same => n,Goto(done)
 same => n(shipped),Gosub(trustline-outbound,s,1(reminder,${{callee}}))
 same => n,Goto(done)
 same => n(one),Gosub(bench-one,s,1(reminder,${{callee}}))
 same => n(done),Set(t1=${{STRFTIME(,,%s.%6q)}})
 same => n,Log(NOTICE,BENCH ${{EXTEN}} $[${{t1}} - ${{t0}}] ${{TRUSTLINE_STATUS}} ${{CALLERID(num)}})
 same => n,Set(i=$[${{i}} + 1])
 same => n,GotoIf($[${{i}} < {calls}]?loop)
 same => n,Log(NOTICE,BENCH ${{EXTEN}} done - -)
 same => n,Hangup()
"""


def write_config(etc: Path, prefix: Path, agi_port: int, calls: int) -> Path:
    top = etc.parent
    dirs = {
        "astetcdir": etc, "astmoddir": prefix / "lib/asterisk/modules", "astvarlibdir": top / "lib",
        "astdbdir": top / "lib", "astkeydir": top / "lib", "astdatadir": prefix / "var/lib/asterisk",
        "astagidir": top / "agi", "astspooldir": top / "spool", "astrundir": top / "run",
        "astlogdir": top / "log", "astsbindir": prefix / "sbin",
    }  # fmt: skip
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    conf = etc / "asterisk.conf"
    lines = ["[directories]", *(f"{k} => {v}" for k, v in dirs.items())]
    conf.write_text("\n".join([*lines, "[options]", "verbose = 0", ""]))
    loads = "\n".join(f"load => {m}.so" for m in MODULES)
    (etc / "modules.conf").write_text(f"[modules]\nautoload = no\n{loads}\n")
    (etc / "logger.conf").write_text("[logfiles]\nbench.log => notice\n")
    dialplan = ROOT / "dialplan" / "trustline.conf"
    (etc / "extensions.conf").write_text(
        EXTENSIONS.format(port=agi_port, dialplan=dialplan, calls=calls)
    )
    return conf


def cli(binary: Path, conf: Path, command: str) -> str:
    done = subprocess.run(
        [str(binary), "-C", str(conf), "-rx", command], capture_output=True, text=True, timeout=30
    )
    return done.stdout + done.stderr


def one_run(binary: Path, conf: Path, log: Path, variant: str) -> list[float]:
    """Originate the loop for ``variant`` and wait for its lines; milliseconds per call."""
    exten = str(VARIANTS.index(variant) + 1)
    seen = len(log.read_text().splitlines()) if log.exists() else 0
    cli(binary, conf, f"channel originate Local/{exten}@bench application Wait 600")
    took: list[float] = []
    deadline = time.time() + 600
    while time.time() < deadline:
        lines = log.read_text().splitlines()[seen:] if log.exists() else []
        found = [m.groups() for m in map(LINE.search, lines) if m and m.group(1) == exten]
        if any(g[1] == "done" for g in found):
            for _, dt, status, cid in found:
                if dt == "done":
                    continue
                if variant != "none" and (status != "ok" or not cid.startswith("+33")):
                    raise SystemExit(
                        f"{variant}: the agent's answer did not arrive: {status} {cid}"
                    )
                took.append(float(dt) * 1000.0)
            return took
        time.sleep(0.2)
    raise SystemExit(f"{variant}: the dialplan loop did not finish")


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--asterisk", type=Path, required=True, help="Asterisk's install prefix")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    binary = args.asterisk / "sbin" / "asterisk"
    if not binary.exists():
        raise SystemExit(f"{binary}: no Asterisk there (give its install prefix)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        agi_port = free_port()
        pools = tmp / "pools.toml"
        pools.write_text(pools_toml(20, 100_000))
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run"], env=agent_env(pools, tmp, agi_port), cwd=ROOT
        )
        conf = write_config(tmp / "etc", args.asterisk, agi_port, args.calls)
        pbx_log = (tmp / "asterisk.out").open("wb")
        pbx = subprocess.Popen(
            [str(binary), "-C", str(conf), "-f", "-n", "-q"],
            stdin=subprocess.DEVNULL, stdout=pbx_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_port(agi_port)
            for _ in range(100):
                if "bench" in cli(binary, conf, "dialplan show bench"):
                    break
                time.sleep(0.2)
            version = cli(binary, conf, "core show version").strip()
            print(version.splitlines()[0] if version else "Asterisk (version unknown)")
            log = tmp / "log" / "bench.log"
            one_run(binary, conf, log, "shipped")  # warm-up: connections, caches
            rounds: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                order = VARIANTS[r % 4 :] + VARIANTS[: r % 4]
                for variant in order:
                    took = one_run(binary, conf, log, variant)
                    rounds[variant].append((statistics.median(took), p95(took)))
            summary = {}
            for variant, runs in rounds.items():
                med = statistics.median(r[0] for r in runs)
                high = statistics.median(r[1] for r in runs)
                summary[variant] = (med, high)
                print(
                    f"{variant:<8} median {med:6.2f} ms  p95 {high:6.2f} ms  ({len(runs)} rounds)"
                )
        finally:
            cli(binary, conf, "core stop now")
            pbx.wait(30)
            agent.terminate()
            agent.wait(30)
    added = summary["shipped"][0] - summary["none"][0]
    added95 = summary["shipped"][1] - summary["none"][0]
    rtt = summary["five"][0] - summary["one"][0]
    print(
        f"asterisk: shipped Gosub adds {added:.2f} ms median (p95 {added95:.2f} ms) to a call's "
        f"set-up; five SET VARIABLE cost {rtt:.2f} ms more than one"
    )


if __name__ == "__main__":
    main()
