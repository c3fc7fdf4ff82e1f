"""The command starts without loading the agent: MixMonitor's post-command runs
`trustline recordings seal` after every recorded call. Figures: bench/cli_startup.py."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("aiohttp", "cryptography", "phonenumbers", "aiosqlite", "pydantic", "tomlkit", "tqdm")


def modules_loaded(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_parsing_the_command_line_loads_no_heavy_library() -> None:
    loaded = modules_loaded(
        "from agent.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.parse_args(['recordings', 'seal', 'x.wav'])\n"
        "parser.parse_args(['stats', '--days', '3'])"
    )
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_help_works_and_answers_without_the_heavy_libraries() -> None:
    for argv in (["--help"], ["recordings", "seal", "--help"]):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "agent", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and "usage: trustline" in proc.stdout
        imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
        assert not imported & set(HEAVY), imported & set(HEAVY)
