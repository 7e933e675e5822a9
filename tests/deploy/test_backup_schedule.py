"""The backup schedules of docs/runbook/backups.md: the Kubernetes CronJob passes
kubernetes-validate (strict, pinned version), the systemd service and timer pass
`systemd-analyze verify` together, and both run the same `slipway db backup` command."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.deploy._tools import DEPLOY, load_yaml_all, os_tool, python_tool, report, run
from tests.deploy.test_kubernetes import KUBERNETES_VERSION
from tests.deploy.test_systemd import SLIPWAY_BIN, unit

pytestmark = pytest.mark.deploy

CRONJOB = DEPLOY / "k8s" / "backup-cronjob.yaml"
SERVICE = DEPLOY / "systemd" / "slipway-backup.service"
TIMER = DEPLOY / "systemd" / "slipway-backup.timer"
KEEP = "14"


def resources() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in load_yaml_all(CRONJOB.read_text(encoding="utf-8"))}


def test_cronjob_passes_kubernetes_validate() -> None:
    result = run(
        [
            python_tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            KUBERNETES_VERSION,
            str(CRONJOB),
        ]
    )
    assert result.returncode == 0, report(result)


def test_kubernetes_validate_catches_a_broken_cronjob(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        CRONJOB.read_text(encoding="utf-8").replace("concurrencyPolicy:", "concurrencyPolcy:"),
        encoding="utf-8",
    )
    result = run(
        [python_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(broken)]
    )
    assert result.returncode != 0, report(result)


def test_cronjob_contract() -> None:
    found = resources()
    cronjob, claim = found["CronJob"], found["PersistentVolumeClaim"]
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid", "never two dumps at once"
    assert spec["timeZone"] == "Etc/UTC"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [
        "slipway", "db", "backup", "--output-dir", "/backups", "--keep", KEEP, "--no-progress",
    ]  # fmt: skip
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts["backups"] == "/backups"
    assert mounts["secrets"] == "/run/secrets", "DATABASE_URL and SECRET_KEY come from there"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.fixture
def stubbed(tmp_path: Path) -> Path:
    """The service and timer, the service's slipway binary replaced by a stub that exists."""
    stub = tmp_path / "bin" / "slipway"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    for path in (SERVICE, TIMER):
        text = path.read_text(encoding="utf-8").replace(SLIPWAY_BIN, str(stub))
        (tmp_path / path.name).write_text(text, encoding="utf-8")
    return tmp_path


def test_service_and_timer_pass_systemd_analyze_verify(stubbed: Path) -> None:
    binary = os_tool("systemd-analyze", "systemd")
    result = run(
        [binary, "verify", str(stubbed / SERVICE.name), str(stubbed / TIMER.name)], cwd=stubbed
    )
    assert result.returncode == 0, report(result)
    assert not (result.stdout + result.stderr).strip(), report(result)


def test_systemd_analyze_catches_a_broken_timer(stubbed: Path) -> None:
    binary = os_tool("systemd-analyze", "systemd")
    timer = stubbed / TIMER.name
    timer.write_text(
        timer.read_text(encoding="utf-8").replace("OnCalendar=", "OnCalender="), encoding="utf-8"
    )
    result = run([binary, "verify", str(timer)], cwd=stubbed)
    assert "OnCalender" in result.stdout + result.stderr, report(result)


def test_timer_schedule_is_a_valid_calendar_expression() -> None:
    timer = unit(TIMER)["Timer"]
    assert timer["Unit"] == SERVICE.name
    assert timer["Persistent"] == "true"
    binary = os_tool("systemd-analyze", "systemd")
    result = run([binary, "calendar", timer["OnCalendar"]])
    assert result.returncode == 0, report(result)
    assert "02:30:00 UTC" in result.stdout
    assert unit(TIMER)["Install"]["WantedBy"] == "timers.target"


def test_both_schedules_run_the_same_backup() -> None:
    service = unit(SERVICE)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == SLIPWAY_BIN
    assert argv[1:4] == ["db", "backup", "--output-dir"]
    assert argv[argv.index("--keep") + 1] == KEEP
    assert service["Type"] == "oneshot"
    # The only writable place under ProtectSystem=strict is the one the backups go to.
    assert "/var/lib/" + service["StateDirectory"] == argv[4]
