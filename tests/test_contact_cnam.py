"""`trustline cnam set-provisioned` and `trustline cnam status` on a real store: mismatches,
propagation, the 7-day rule (and --force), plain-ASCII names with a suggestion."""

from __future__ import annotations

import asyncio
import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from agent.cli import main
from agent.store import open_database
from tests.conftest import POOLS, write_config


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    write_config(tmp_path / "pools.toml", POOLS)
    (tmp_path / "data").mkdir()

    async def create() -> None:
        db = await open_database(tmp_path / "data" / "trustline.sqlite3")
        await db.close()

    asyncio.run(create())
    return ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "pools.toml")]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).isoformat()


def test_registry(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cnam", "status", "--json", *where)
    states = {r["number"]: r["state"] for r in map(json.loads, out.splitlines())}
    assert code == 0 and set(states.values()) == {"never_provisioned"} and len(states) == 4

    code, out, _ = run(
        capsys, "cnam", "set-provisioned", "01 42 00 00 01", "Clinique StMarc",
        "--on", days_ago(10), *where,
    )  # fmt: skip
    assert code == 0 and out.startswith("+33142000001: provisioned 'Clinique StMarc'; ok")
    code, out, _ = run(
        capsys, "cnam", "set-provisioned", "+33142000002", "StMarc", "--on", days_ago(2), *where
    )
    assert code == 0 and "mismatch (a change is allowed in" in out
    # Fixing it at once breaks the carriers' one-change-per-7-days rule.
    code, _, err = run(capsys, "cnam", "set-provisioned", "+33142000002", "Clinique StMarc", *where)
    assert code == 65
    assert "carriers allow one change per 7 days; record it anyway with --force" in err
    code, out, _ = run(
        capsys, "cnam", "set-provisioned", "+33142000002", "Clinique StMarc", "--force", *where
    )
    assert code == 0 and "pending (may take 72 more hours" in out

    code, _, err = run(
        capsys, "cnam", "set-provisioned", "+33472000003", "Clinique Lyonnaise é", *where
    )
    assert code == 65 and "use 'Clinique Lyonna'" in err
    code, _, err = run(capsys, "cnam", "set-provisioned", "+33999", "X", *where)
    assert code == 65
    code, _, err = run(capsys, "cnam", "set-provisioned", "+33142000077", "X", *where)
    assert code == 65 and "not in any pool" in err

    code, out, _ = run(capsys, "cnam", "status", *where)
    lines = out.splitlines()
    assert code == 0 and lines[-1] == "1 of 4 numbers show their wanted name everywhere"
    listed = {line.split()[0]: line.split()[1] for line in lines[1:-1]}
    assert listed == {
        "+33142000002": "pending",
        "+33472000003": "never_provisioned",
        "+33142000099": "never_provisioned",
    }
