"""`trustline numbers import`: 10,000 rows with a progress bar and a summary, comments kept,
ARCEP rules, duplicates across pools and within the file, line numbers, exit codes, dry run,
and nothing half-written when the result fails the config check."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config

POOLS = """\
# Centre pools: edited by hand, comments must survive an import.
[defaults]
timezone = "Europe/Paris"
region = "FR"   # national numbers are French

[pools.reminders]
purposes = ["reminder"]
numbers = [
  # the switchboard's own line first
  { number = "+33142000001", name = "Clinique StMarc" },
]

[pools.results]
purposes = ["results"]
numbers = [ { number = "+33142000010", name = "StMarc Resultat" } ]
"""


@pytest.fixture
def pools(tmp_path: Path) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text(POOLS)
    path.chmod(0o640)
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_rows_are_checked_and_reported_by_line(
    tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(
        tmp_path / "n.csv",
        [
            "name,number",  # any column order
            "Clinique StMarc,01 42 00 00 05",
            ",0612345678",  # mobile: ARCEP
            ",+33142000010",  # already in another pool
            ",0142000005",  # repeats line 2
            ",0162000000",  # ARCEP range of automated calling systems
            ",0899000000",  # premium rate
            ",not a number",
            "Clinique Hélène,0491000007",  # CNAM: not plain ASCII
            ",04 91 00 00 08",  # no name: the pool's first name
        ],
    )
    code, out, _ = run(
        ["numbers", "import", str(csv), "--pool", "reminders", "--config", str(pools)], capsys
    )
    assert code == 65
    assert f"2 added to pool reminders in {pools}" in out
    assert "added           2\nduplicate       2\nrejected        5" in out
    lines = [line for line in out.splitlines() if line.startswith("line ")]
    assert [line.split(":")[0] for line in lines] == [f"line {n}" for n in (3, 4, 5, 6, 7, 8, 9)]
    assert "line 3: 0612345678: rejected: mobile 06/07 numbers are reserved by ARCEP" in out
    assert "line 4: +33142000010: duplicate: in pools.results" in out
    assert "line 5: 0142000005: duplicate: repeats line 2" in out
    assert "line 6: 0162000000: rejected: range reserved by ARCEP" in out
    assert "line 7: 0899000000: rejected: premium-rate number" in out
    assert (
        "line 9: 0491000007: rejected: caller name 'Clinique Hélène'" in out
        and "use 'Clinique Helene'" in out
    )
    text = pools.read_text()
    assert text.startswith(POOLS.split("  { number")[0])  # comments and layout before: intact
    assert (
        "  # the switchboard's own line first\n" in text and "# national numbers are French" in text
    )
    assert '  { number = "+33142000005", name = "Clinique StMarc" },\n' in text
    assert '  { number = "+33491000008", name = "Clinique StMarc" },\n' in text
    assert pools.stat().st_mode & 0o777 == 0o640
    config = load_config(pools)
    assert [n.number for n in config.pools["reminders"].numbers] == [
        "+33142000001", "+33142000005", "+33491000008",
    ]  # fmt: skip


def test_dry_run_writes_nothing_and_all_accepted_exits_0(
    tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "n.csv", ["number", "0142000005", "0142000001"])
    args = ["numbers", "import", str(csv), "--pool", "reminders", "--config", str(pools)]
    code, out, _ = run([*args, "--dry-run"], capsys)
    assert code == 0 and "dry run: nothing written; 1 would be added" in out
    assert pools.read_text() == POOLS
    code, out, _ = run(args, capsys)
    assert code == 0 and "1 added" in out  # a duplicate is skipped, not rejected


def test_nothing_half_written_when_the_result_fails_the_check(
    tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rows that pass the row checks but break the file: the results pool names as its fallback
    # a number it does not hold (an error already, but one the row checks cannot see once the
    # file is rewritten); the check on the result refuses the whole file.
    pools.write_text(
        POOLS.replace(
            'purposes = ["results"]', 'purposes = ["results"]\nfallback = "+33142000011"\n'
        )
    )
    before = pools.read_text()
    csv = write_csv(tmp_path / "n.csv", ["number", "0142000011"])
    code, _, err = run(
        ["numbers", "import", str(csv), "--pool", "reminders", "--config", str(pools)], capsys
    )
    assert code == 78
    assert "is not one of this pool's numbers" in err
    assert pools.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.csv", "pools.toml"]  # no temp left


def test_bad_files_and_pools(
    tmp_path: Path, pools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["numbers", "import", "--config", str(pools)]
    no_header = write_csv(tmp_path / "a.csv", ["0142000005"])
    code, _, err = run([*base, str(no_header), "--pool", "reminders"], capsys)
    assert code == 65 and "header with a 'number' column" in err
    good = write_csv(tmp_path / "b.csv", ["number", "0142000005"])
    code, _, err = run([*base, str(good), "--pool", "nope"], capsys)
    assert code == 64 and "no pool 'nope'" in err
    assert pools.read_text() == POOLS


def test_ten_thousand_rows_with_a_progress_bar(tmp_path: Path, pools: Path) -> None:
    rows = ["number,name"]
    rows += [f"+3314{i:07d},Clinique StMarc" for i in range(100_000, 110_000)]
    rows[5] = "+33612345678,Clinique StMarc"  # line 6: rejected
    rows[9] = rows[8]  # line 10: repeats line 9
    csv = write_csv(tmp_path / "big.csv", rows)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "numbers", "import", str(csv), "--pool", "reminders"],
            stdout=subprocess.PIPE,
            stderr=follower,
            env={**os.environ, "TRUSTLINE_CONFIG": str(pools)},
            timeout=110,
        )
        os.close(follower)
        follower = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    out = proc.stdout.decode()
    assert proc.returncode == 65, out
    assert "10000/10000" in drawn.decode()  # the bar reached the end
    assert "added        9998\nduplicate       1\nrejected        1" in out
    assert "line 6: +33612345678: rejected: mobile 06/07" in out
    assert "line 10: +33140100007: duplicate: repeats line 9" in out
    text = pools.read_text()
    assert "# Centre pools: edited by hand, comments must survive an import." in text
    assert "  # the switchboard's own line first\n" in text
    assert len(load_config(pools).pools["reminders"].numbers) == 9999
