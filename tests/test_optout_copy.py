"""The agent's copy of the opt-out set: what decides calls while the store is down at start.

The store here is a PostgreSQL URL on a port where nothing listens (the server is down), opened
as the agent opens it at start: every statement fails until the server answers.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import phone
from agent.clock import FrozenClock
from agent.compliance import snapshot
from agent.compliance.config import ComplianceConfig
from agent.compliance.service import ComplianceService
from agent.errors import StoreError
from agent.store import open_database

KEY = b"k" * 32
NOW = 1_795_000_000.0
PATIENT = "0612345678"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def started_while_down(copy: Path) -> AsyncIterator[ComplianceService]:
    db = await open_database(f"postgresql://nobody@127.0.0.1:{closed_port()}/x", wait=False)
    try:
        service = ComplianceService(db, FrozenClock(NOW), KEY, ComplianceConfig(), snapshot=copy)
        with pytest.raises(StoreError):
            await service.start(refresh_seconds=None)
        yield service
    finally:
        await db.close()


async def test_a_patient_opted_out_in_the_copy_is_not_called_while_the_store_is_down(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "optouts.json"
    hashed = phone.keyed_hash(KEY, phone.to_e164(PATIENT, "FR"))
    snapshot.write(copy, {(hashed, "survey")}, NOW - 3600)
    async with started_while_down(copy) as service:
        assert (await service.check("survey", PATIENT)).status == "opted_out"
        assert (await service.check("reminder", PATIENT)).allowed  # only what the patient asked
        assert (await service.check("survey", "0612345679")).allowed


TORN = b'{"format": "trustline-optouts-v1", "optouts": [["a"'


@pytest.mark.parametrize("body", [None, TORN, b"[]"])
async def test_no_usable_copy_means_no_patient_is_called_until_the_store_answers(
    tmp_path: Path, body: bytes | None
) -> None:
    copy = tmp_path / "optouts.json"
    if body is not None:  # a torn or foreign file is not taken for the set
        copy.write_bytes(body)
    async with started_while_down(copy) as service:
        verdict = await service.check("reminder", PATIENT)
        assert (verdict.status, verdict.reason) == ("outside_window", "optouts_unknown")
        assert verdict.next_window == "2026-11-18T12:07:40+01:00"  # a minute on, Paris time
        assert (await service.check("reminder", "2001")).allowed  # an extension: no patient


def test_the_copy_holds_hashes_only_and_is_the_agents_alone(tmp_path: Path) -> None:
    copy = tmp_path / "optouts.json"
    hashed = phone.keyed_hash(KEY, "+33612345678")
    snapshot.write(copy, {(hashed, "survey")}, NOW)
    assert copy.stat().st_mode & 0o777 == 0o600
    assert "612345678" not in copy.read_text()
    assert snapshot.read(copy) == ({(hashed, "survey")}, NOW)
