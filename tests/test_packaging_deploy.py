"""The deployment files as a sysadmin's tools read them: compose.yaml against the Compose
specification's JSON schema, the systemd unit through systemd-analyze, docker/check."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def compose_schema() -> dict[str, Any]:
    # check-jsonschema vendors the Compose specification's schema (compose-spec/compose-spec,
    # schema/compose-spec.json) and keeps it current; we read the file, jsonschema validates.
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text("utf-8"))
    return schema


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load((DOCKER / "compose.yaml").read_text("utf-8"))
    return data


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_is_valid_compose() -> None:
    assert schema_errors(compose()) == []


def test_the_schema_check_catches_a_broken_compose_file() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["agent"]["read_onyl"] = True
    broken["services"]["asterisk"]["ports"] = 5060
    errors = schema_errors(broken)
    assert any("read_onyl" in e for e in errors), errors
    assert any(e.startswith("services/asterisk/ports") for e in errors), errors


def test_compose_runs_the_agent_beside_the_admins_asterisk() -> None:
    services = compose()["services"]
    asterisk, agent = services["asterisk"], services["agent"]
    assert asterisk["image"].startswith("${ASTERISK_IMAGE:?")  # required, with a message
    assert agent["pid"] == "service:asterisk"
    assert agent["network_mode"] == "service:asterisk"
    assert "recordings:/var/spool/asterisk/monitor" in agent["volumes"]
    assert "recordings:/var/spool/asterisk/monitor" in asterisk["volumes"]
    assert "../dialplan:/etc/asterisk/trustline:ro" in asterisk["volumes"]
    assert any(v.startswith("../asterisk-conf:") for v in asterisk["volumes"])
    assert agent["read_only"] is True and agent["cap_drop"] == ["ALL"]
    assert not agent["user"].startswith("0")
    # Secrets arrive as files, never as values in the environment.
    assert agent["environment"]["TRUSTLINE_AMI_SECRET_FILE"] == "/run/secrets/ami_secret"
    assert not any("SECRET" in k and not k.endswith("_FILE") for k in agent["environment"])
    assert services["postgres"]["profiles"] == ["postgres"]
    assert "TRUSTLINE_DATABASE_URL" in agent["environment"]


def test_dockerfile_installs_the_wheel_as_a_non_root_user_with_a_health_check() -> None:
    text = (DOCKER / "Dockerfile").read_text("utf-8")
    final = text.rsplit("\nFROM ", 1)[1]
    assert text.count("\nFROM ") == 2  # build stage, runtime stage
    assert "pip install /dist/trustline-*.whl" in text
    assert "COPY agent" not in final  # the runtime stage has no source tree
    assert "USER trustline" in final and "STOPSIGNAL SIGTERM" in final
    assert 'CMD ["python", "/opt/trustline/healthcheck.py"]' in final
    assert "COPY docker/healthcheck.py /opt/trustline/healthcheck.py" in final
    assert "org.opencontainers.image.title" in final
    for line in final.splitlines():
        assert not ("SECRET=" in line or "PASSWORD=" in line), line


def test_docker_check_says_plainly_when_no_engine_can_build() -> None:
    path = "/usr/bin:/bin"  # without /usr/local/bin, where a docker client may be
    if any(shutil.which(e, path=path) for e in ("docker", "podman")):
        pytest.skip("an engine is on /usr/bin: docker/check would really build")
    result = subprocess.run(
        ["bash", str(DOCKER / "check")], env={"PATH": path}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "SKIPPED: no container engine" in result.stdout
    assert "nothing was built" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # The unit names the install path /opt/trustline; here that is this venv's trustline.
    trustline = Path(sys.executable).with_name("trustline")
    unit = (DOCKER / "systemd" / "trustline.service").read_text("utf-8")
    assert "ExecStart=/opt/trustline/bin/trustline run" in unit
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "\nCapabilityBoundingSet=\n" in unit and "ProtectSystem=strict" in unit
    good = tmp_path / "trustline.service"
    good.write_text(unit.replace("/opt/trustline/bin/trustline", str(trustline)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(good)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr
    # The check is real: a misspelt hardening key is reported.
    bad = tmp_path / "bad.service"
    bad.write_text(good.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert "ProtectSystm" in result.stderr
