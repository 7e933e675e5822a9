"""The container's runtime without Docker: the environment the Dockerfile builds, the
entrypoint it runs, the user it runs as.

- The build context is what .dockerignore lets through (pyproject.toml, uv.lock,
  README.md, src/, ...), copied to a temporary directory.
- `uv sync --frozen --no-dev --no-editable` installs it into a fresh virtual environment,
  as the builder stage does; then the source tree is deleted, as the runtime stage has none.
- docker-entrypoint.sh runs with the image's environment (ENVIRONMENT=production, ...) as
  an unprivileged user (nobody, through setpriv, which execs like Docker's USER) in a
  directory it cannot write, with MIGRATE_ON_START=1 against a fresh PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from slipway.platform.db.migrate import head_revision
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import ManagedProcess, require_or_skip

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
UNPRIVILEGED_UID = 65534  # nobody
SYNC_TIMEOUT = 600
PRODUCTION_SECRET = "container-secret-" + "c" * 40


@dataclass
class Runtime:
    root: Path  # the "image": venv + entrypoint, owned by root, read-only for the app user
    venv: Path
    entrypoint: Path
    writable_tmp: Path  # the tmpfs of a read-only container

    def as_app_user(self, env: dict[str, str], *argv: str) -> list[str]:
        """`argv` with exactly `env`, as the unprivileged user when we are root."""
        command = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv]
        if os.geteuid() != 0:
            return command
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            require_or_skip("setpriv (util-linux) is needed to drop privileges")
        uid = str(UNPRIVILEGED_UID)
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *command]

    def command(self, env: dict[str, str], *args: str) -> list[str]:
        """The container's start: the entrypoint, with the image's CMD unless `args`."""
        return self.as_app_user(env, str(self.entrypoint), *args)


def _context_files() -> list[str]:
    """The paths .dockerignore lets into the build context (its `!` lines)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def _runtime_python() -> str:
    """An interpreter the unprivileged user can execute (not one under /root)."""
    if os.geteuid() != 0:
        return sys.executable
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11", "/usr/bin/python3"):
        path = Path(candidate)
        if not path.exists():
            continue
        resolved = path.resolve()
        if all(parent.stat().st_mode & 0o001 for parent in resolved.parents):
            version = subprocess.run(
                [str(resolved), "-c", "import sys; print(sys.version_info >= (3, 11))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if version.stdout.strip() == "True":
                return str(resolved)
    return require_or_skip("no Python >= 3.11 outside /root for the unprivileged user")


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    uv = shutil.which("uv")
    if uv is None:
        require_or_skip("uv is not installed")
    # Not under pytest's tmp dir: that is private to root, and the app user must read this.
    root = Path(tempfile.mkdtemp(prefix="slipway-image-"))
    try:
        root.chmod(0o755)
        context = root / "build-context"
        context.mkdir()
        for name in _context_files():
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )
            else:
                shutil.copy2(source, context / name)
        venv = root / "venv"
        env = {
            **os.environ,
            "UV_PROJECT_ENVIRONMENT": str(venv),
            "UV_PYTHON": _runtime_python(),
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
        }
        env.pop("VIRTUAL_ENV", None)
        sync = subprocess.run(
            [uv, "sync", "--frozen", "--no-dev", "--no-editable"],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            timeout=SYNC_TIMEOUT,
            check=False,
        )
        assert sync.returncode == 0, sync.stderr[-4000:]
        entrypoint = root / "docker-entrypoint.sh"
        shutil.copy2(context / "docker-entrypoint.sh", entrypoint)
        # The runtime stage has no source tree: only the venv and the entrypoint.
        shutil.rmtree(context)
        writable_tmp = root / "tmp"
        writable_tmp.mkdir()
        if os.geteuid() == 0:
            os.chown(writable_tmp, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        yield Runtime(root=root, venv=venv, entrypoint=entrypoint, writable_tmp=writable_tmp)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _image_env(runtime: Runtime, database_url: str, port: int, **extra: str) -> dict[str, str]:
    """The Dockerfile's ENV plus what an operator sets (docs/deploy/docker.md)."""
    env = {
        "PATH": f"{runtime.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "ENVIRONMENT": "production",
        "LOG_FORMAT": "json",
        "HOST": LOOPBACK,
        "PORT": str(port),
        "TMPDIR": str(runtime.writable_tmp),
        "PROMETHEUS_MULTIPROC_DIR": str(runtime.writable_tmp / "prometheus"),
        "STORAGE_LOCAL_DIR": str(runtime.writable_tmp / "storage"),
        "SECRETS_DIR": "/nonexistent-secrets",
        "SECRET_KEY": PRODUCTION_SECRET,
        # Heroku/DO style URL: the app rewrites it to the async driver.
        "DATABASE_URL": database_url.replace("postgresql+asyncpg://", "postgresql://"),
        "ALLOWED_HOSTS": "api.example.com,localhost",
        "ALLOW_EMBEDDED_JOBS_IN_PRODUCTION": "true",
        "WEB_CONCURRENCY": "2",
        "GRACEFUL_TIMEOUT": "10",
    }
    env.update(extra)
    return env


async def _alembic_version(url: str) -> str | None:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL")
        if not exists:
            return None
        version: str = await conn.fetchval("SELECT version_num FROM alembic_version")
        return version
    finally:
        await conn.close()


@pytest.fixture
def fresh_database(postgres_server: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"container_{request.node.name[:20].lower()}_{os.getpid()}".replace("-", "_")
    name = "".join(ch for ch in name if ch.isalnum() or ch == "_")
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_entrypoint_migrates_then_serves_as_an_unprivileged_user(
    runtime: Runtime, fresh_database: str
) -> None:
    port = free_port()
    env = _image_env(runtime, fresh_database, port, MIGRATE_ON_START="1")
    server = ManagedProcess(
        runtime.command(env),  # no arguments: the image's CMD (gunicorn)
        name="container",
        inherit_env=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        cwd=runtime.root,  # the image's WORKDIR: not writable for the app user
        log_path=runtime.writable_tmp.parent / "container.log",
    )
    with server:
        server.wait_for_http(
            f"http://{LOOPBACK}:{port}/health/live", timeout=120, expect_status=None
        )
        ready = httpx.get(
            f"http://{LOOPBACK}:{port}/health/ready", headers={"Host": "localhost"}, timeout=10
        )
        # Docker's HEALTHCHECK: the same command, the same user and environment.
        probe = subprocess.run(
            runtime.as_app_user(env, str(runtime.venv / "bin" / "slipway"), "healthcheck"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        server_uid = _uid_of(server.pid)
        code = server.stop(timeout=30)
        log = server.log_text()

    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["status"] == "ok"
    assert probe.returncode == 0, probe.stderr
    if os.geteuid() == 0:
        assert server_uid == UNPRIVILEGED_UID
    # Migrated before serving, under the advisory lock, to the head revision.
    assert asyncio.run(_alembic_version(fresh_database)) == head_revision()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    events = [r.get("event") for r in records]
    assert "docker-entrypoint: MIGRATE_ON_START is set: slipway migrate" in log
    gunicorn_start = next(i for i, e in enumerate(events) if str(e).startswith("Starting gunicorn"))
    assert events.index("migrate_done") < gunicorn_start
    # exec: the server is the entrypoint's process, so SIGTERM reached it and it drained.
    assert code == 0, log[-3000:]
    assert events.count("services_closed") == 2
    assert not [r for r in records if r.get("level") in ("error", "critical")], log[-3000:]


def test_without_migrate_on_start_the_schema_is_left_alone(
    runtime: Runtime, fresh_database: str
) -> None:
    port = free_port()
    env = _image_env(runtime, fresh_database, port)
    result = subprocess.run(
        runtime.command(env, "slipway", "version"),
        cwd=runtime.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Slipway ")
    assert "MIGRATE_ON_START" not in result.stderr
    assert asyncio.run(_alembic_version(fresh_database)) is None


def test_invalid_migrate_on_start_refuses_to_start(runtime: Runtime, fresh_database: str) -> None:
    env = _image_env(runtime, fresh_database, free_port(), MIGRATE_ON_START="maybe")

    result = subprocess.run(
        runtime.command(env),
        cwd=runtime.root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert "MIGRATE_ON_START must be 1 or 0" in result.stderr


def test_runtime_has_no_source_tree_and_no_dev_tools(runtime: Runtime) -> None:
    bin_dir = runtime.venv / "bin"
    assert (bin_dir / "slipway").exists()
    assert (bin_dir / "gunicorn").exists()
    for dev_tool in ("pytest", "mypy", "ruff", "hadolint"):
        assert not (bin_dir / dev_tool).exists(), dev_tool
    # The package is a regular install inside the venv (migrations included), not a link
    # to a source checkout.
    assert not [p for p in runtime.venv.rglob("*.pth") if "build-context" in p.read_text()]
    assert list(runtime.venv.rglob("slipway/migrations/versions/*.py"))
