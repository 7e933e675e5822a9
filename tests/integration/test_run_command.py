"""The one-command start: `slipway serve` in an empty directory, like a fresh clone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from slipway.platform.db.migrate import head_revision
from tests.integration.conftest import SlipwayServer, slipway_env, start_server

pytestmark = [pytest.mark.integration]


def test_development_serve_migrates_embedded_database_and_is_ready(
    tmp_path: Path, servers: list[SlipwayServer]
) -> None:
    server = start_server(tmp_path, slipway_env())
    servers.append(server)

    ready = httpx.get(server.url("/health/ready"), timeout=10)
    docs = httpx.get(server.url("/docs"), timeout=10)
    info = httpx.get(server.url("/info"), timeout=10)

    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["database"]["status"] == "ok"
    assert docs.status_code == 200
    assert info.json()["environment"] == "development"
    # The embedded database lives in the working directory and is at the head revision.
    database = tmp_path / "slipway.db"
    assert database.is_file()
    with sqlite3.connect(database) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert version == head_revision()
    assert "jobs" in tables
    server.assert_graceful_stop()


def test_real_server_errors_use_the_envelope(tmp_path: Path, servers: list[SlipwayServer]) -> None:
    server = start_server(tmp_path, slipway_env(LOG_FORMAT="json", MAX_BODY_SIZE="4096"))
    servers.append(server)

    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        missing = http.get("/no/such/page")
        too_large = http.post("/health/live", content=b"x" * 10_000)
        bad_host = http.get("/info", headers={"Host": "evil.example.com"})

    for response, status in ((missing, 404), (too_large, 413), (bad_host, 400)):
        assert response.status_code == status
        assert response.json()["error"]["request_id"] == response.headers["x-request-id"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "server" not in response.headers  # no version banner


def test_production_serve_never_migrates_implicitly(
    tmp_path: Path, servers: list[SlipwayServer]
) -> None:
    env = slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY="production-secret-" + "k" * 40,
        ALLOW_SQLITE_IN_PRODUCTION="true",
        ALLOW_EMBEDDED_JOBS_IN_PRODUCTION="true",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'prod.db'}",
    )
    server = start_server(tmp_path, env)
    servers.append(server)

    docs = httpx.get(server.url("/docs"), timeout=10)
    openapi = httpx.get(server.url("/openapi.json"), timeout=10)
    ready = httpx.get(server.url("/health/ready"), timeout=10)

    assert docs.status_code == 404
    assert openapi.status_code == 404
    assert ready.status_code == 200
    with sqlite3.connect(tmp_path / "prod.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" not in tables
    server.assert_graceful_stop()
