"""Every shell script in the repository passes shellcheck (following `source`d files), and
the deployment scripts that can run here do what they promise: the Compose secret files,
the supervisor environment wrapper, the Lambda build script's interface.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy._tools import DEPLOY, ROOT, os_tool, report, run, settings_from

pytestmark = pytest.mark.deploy

#: Where shell scripts live; generated and vendored trees are not ours to lint.
SEARCH = [ROOT, ROOT / "scripts", ROOT / ".ci", DEPLOY]
SKIP_PARTS = {".venv", ".git", "node_modules", "build", "__pycache__", ".mypy_cache"}
SHEBANGS = (b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/usr/bin/env sh")


def shell_scripts() -> list[Path]:
    found: set[Path] = set()
    for base in SEARCH:
        candidates = base.glob("*") if base == ROOT else base.rglob("*")
        for path in candidates:
            if not path.is_file() or SKIP_PARTS & set(path.relative_to(ROOT).parts):
                continue
            with path.open("rb") as handle:
                head = handle.readline()
            if path.suffix in {".sh", ".bash"} or head.startswith(SHEBANGS):
                found.add(path)
    return sorted(found)


SCRIPTS = shell_scripts()


def test_the_deployment_scripts_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in SCRIPTS}
    assert {
        "deploy/vm/droplet-setup.sh",
        "deploy/vm/deploy.sh",
        "deploy/vm/lib.sh",
        "deploy/aws/ec2/setup.sh",
        "deploy/k8s/deploy.sh",
        "deploy/compose/init-secrets.sh",
        "deploy/aws/lambda/build.sh",
        "deploy/vm/slipway-env",
    } <= names


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck(path: Path) -> None:
    shellcheck = os_tool("shellcheck", "shellcheck")
    result = run([shellcheck, "--external-sources", "--format=gcc", str(path)], cwd=path.parent)
    assert result.returncode == 0, report(result)
    if path.name != "lib.sh":  # sourced, never run
        assert path.stat().st_mode & stat.S_IXUSR, f"{path.name} is not executable"


def test_shellcheck_can_fail(tmp_path: Path) -> None:
    script = tmp_path / "broken.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $TARGET/*\n", encoding="utf-8")
    result = run([os_tool("shellcheck", "shellcheck"), "--format=gcc", str(script)])
    assert result.returncode != 0
    assert "SC2086" in result.stdout


# --- deploy/compose/init-secrets.sh ----------------------------------------------------------


def test_compose_secrets_are_created_once_and_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    first = run([str(DEPLOY / "compose" / "init-secrets.sh"), str(secrets)])
    assert first.returncode == 0, report(first)
    names = {"secret_key", "database_url", "postgres_password", "grafana_admin_password"}
    assert {path.name for path in secrets.iterdir()} == names
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700, "no other host user reaches them"
    contents = {name: (secrets / name).read_text(encoding="utf-8") for name in names}
    password = contents["postgres_password"]
    assert len(password) >= 32
    assert "\n" not in password
    assert contents["database_url"] == f"postgresql+asyncpg://slipway:{password}@db:5432/slipway"
    assert len({contents["secret_key"], password, contents["grafana_admin_password"]}) == 3

    again = run([str(DEPLOY / "compose" / "init-secrets.sh"), str(secrets)])
    assert again.returncode == 0
    assert "created" not in again.stdout, "a re-run must never rotate a secret"
    assert {name: (secrets / name).read_text(encoding="utf-8") for name in names} == contents

    settings = settings_from(
        monkeypatch,
        {
            "ENVIRONMENT": "production",
            "ALLOWED_HOSTS": "api.example.com",
            "REDIS_URL": "redis://redis:6379/0",
        },
        secrets_dir=secrets,
    )
    assert settings.secret_key.get_secret_value() == contents["secret_key"]
    assert settings.database_url == contents["database_url"]
    assert settings.production_problems() == []


# --- deploy/vm/slipway-env -----------------------------------------------------------------


def test_env_wrapper_exports_the_settings_file(tmp_path: Path) -> None:
    env_file = tmp_path / "slipway.env"
    env_file.write_text(
        "# comment\nENVIRONMENT=production\nALLOWED_HOSTS=api.example.com,localhost\n",
        encoding="utf-8",
    )
    result = run(
        [str(DEPLOY / "vm" / "slipway-env"), "sh", "-c", 'echo "$ENVIRONMENT|$ALLOWED_HOSTS|$$"'],
        env={"SLIPWAY_ENV_FILE": str(env_file)},
    )
    assert result.returncode == 0, report(result)
    assert result.stdout.split("|")[:2] == ["production", "api.example.com,localhost"]


def test_env_wrapper_execs_so_signals_reach_the_server(tmp_path: Path) -> None:
    """`exec`: the wrapped command keeps the wrapper's PID, so supervisor's SIGTERM/SIGHUP
    go to Gunicorn itself, not to a shell that would swallow them."""
    process = subprocess.Popen(
        [str(DEPLOY / "vm" / "slipway-env"), sys.executable, "-c", "import os; print(os.getpid())"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLIPWAY_ENV_FILE": str(tmp_path / "missing.env")},
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert int(output) == process.pid


# --- deploy/aws/lambda/build.sh --------------------------------------------------------------


def test_lambda_build_script_targets_the_lambda_runtime() -> None:
    text = (DEPLOY / "aws" / "lambda" / "build.sh").read_text(encoding="utf-8")
    pinned = (ROOT / ".python-version").read_text(encoding="utf-8").strip()
    assert f'python_version="{pinned}"' in text
    assert "--only-binary :all:" in text, "nothing may be compiled for the build machine"
    assert "--frozen --no-dev" in text, "exactly the locked runtime dependencies"
