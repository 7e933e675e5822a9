"""The `slipway` command line, run as a user runs it (a child process)."""

from __future__ import annotations

import json
import sys
from importlib.metadata import version as package_version
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from slipway.app import create_app
from tests.conftest import make_settings
from tests.integration.conftest import run_slipway, slipway_env
from tests.support.ports import free_port

PRODUCTION_SECRET = "production-secret-" + "s" * 40


def test_version(tmp_path: Path) -> None:
    result = run_slipway(["version"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Slipway {package_version('slipway')}"


def test_version_includes_git_sha(tmp_path: Path) -> None:
    result = run_slipway(["version"], cwd=tmp_path, env=slipway_env(GIT_SHA="abc1234"))

    assert result.stdout.strip().endswith("+abc1234")


def test_openapi_writes_schema_file(tmp_path: Path) -> None:
    target = tmp_path / "openapi.json"

    result = run_slipway(["openapi", "-o", str(target)], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    schema = json.loads(target.read_text())
    assert schema["openapi"].startswith("3.")
    assert "/health/ready" in schema["paths"]
    assert "/health/live" in schema["paths"]
    # The envelope is documented on the routes.
    assert "ErrorEnvelope" in schema["components"]["schemas"]


def test_openapi_to_stdout_is_pure_json(tmp_path: Path) -> None:
    result = run_slipway(["openapi"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "/health/ready" in json.loads(result.stdout)["paths"]


def test_openapi_works_with_production_settings(tmp_path: Path) -> None:
    """Build pipelines export the schema with the production configuration."""
    env = slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET,
        DATABASE_URL="postgresql://app:pw@db.internal/slipway",
        ALLOWED_HOSTS="api.example.com",
        ALLOW_EMBEDDED_JOBS_IN_PRODUCTION="true",
    )
    target = tmp_path / "openapi.json"

    result = run_slipway(["openapi", "-o", str(target)], cwd=tmp_path, env=env)

    assert result.returncode == 0, result.stderr
    assert "/health/ready" in json.loads(target.read_text())["paths"]


def test_python_dash_m_help(tmp_path: Path) -> None:
    result = run_slipway(["--help"], cwd=tmp_path, executable=(sys.executable, "-m", "slipway"))

    assert result.returncode == 0, result.stderr
    for command in ("serve", "migrate", "openapi", "version"):
        assert command in result.stdout


def test_serve_help_lists_options(tmp_path: Path) -> None:
    result = run_slipway(["serve", "--help"], cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--workers", "--reload"):
        assert option in result.stdout


def test_production_with_default_secret_refuses_to_serve(tmp_path: Path) -> None:
    env = slipway_env(ENVIRONMENT="production", PORT="1")  # never reaches the bind

    result = run_slipway(["serve"], cwd=tmp_path, env=env, timeout=30)

    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # Nothing was created: no implicit migration, no database file.
    assert not (tmp_path / "slipway.db").exists()


def test_production_refusal_names_every_problem(tmp_path: Path) -> None:
    env = slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY="short",
        DEBUG="true",
        DOCS_ENABLED="true",
        CORS_ORIGINS="*",
        ALLOWED_HOSTS="*",
    )

    result = run_slipway(["serve"], cwd=tmp_path, env=env, timeout=30)

    assert result.returncode != 0
    for name in (
        "SECRET_KEY",
        "DEBUG",
        "ALLOW_DOCS_IN_PRODUCTION",
        "CORS_ORIGINS",
        "ALLOWED_HOSTS",
        "ALLOW_SQLITE_IN_PRODUCTION",
    ):
        assert name in result.stderr
    assert "short" not in result.stderr.replace("shorter", "")
    assert "Traceback" not in result.stderr


def test_invalid_setting_is_named_without_traceback(tmp_path: Path) -> None:
    result = run_slipway(["version"], cwd=tmp_path, env=slipway_env(PORT="not-a-port"))

    assert result.returncode != 0
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"]
)
async def test_valid_production_app_hides_docs(path: str, tmp_path: Path) -> None:
    settings = make_settings(
        environment="production",
        secret_key=PRODUCTION_SECRET,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
        allow_sqlite_in_production=True,
        allow_embedded_jobs_in_production=True,
        allowed_hosts=["api.example.com"],
    )
    app = create_app(settings)

    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://api.example.com"
        ) as client,
    ):
        hidden = await client.get(path)
        live = await client.get("/health/live")

    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "not_found"
    assert live.status_code == 200


def test_failed_migrate_exits_non_zero_with_json_lines(tmp_path: Path) -> None:
    url = f"postgresql://slipway:pw@127.0.0.1:{free_port()}/slipway"  # nothing listens there
    env = slipway_env(DATABASE_URL=url, LOG_FORMAT="json")

    result = run_slipway(["migrate"], cwd=tmp_path, env=env)

    assert result.returncode == 1
    lines = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line]
    (failure,) = [line for line in lines if line["event"] == "migrate_failed"]
    assert failure["level"] == "error"
    assert "exception" in failure
    assert "pw@" not in result.stdout + result.stderr  # the password never reaches the log
