"""Liveness, readiness (database and Redis, each under a timeout) and build info."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from slipway.app import create_app
from slipway.platform.health import CHECK_TIMEOUT_SECONDS
from slipway.platform.logging import configure_logging
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.support.ports import free_port


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ) as http,
    ):
        yield http


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A loopback port that completes TCP handshakes and then never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # connections wait in the backlog; nothing ever accepts them
        yield listener.getsockname()[1]


def unreachable_postgres_url() -> str:
    """A PostgreSQL URL on a loopback port nothing listens on."""
    return f"postgresql+asyncpg://slipway:pw@127.0.0.1:{free_port()}/slipway"


def unreachable_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'health.db'}"


# --- live -----------------------------------------------------------------------------------


async def test_live(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


async def test_health_is_an_alias_of_live(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    alias = await client.get("/health")

    assert alias.status_code == 200
    assert alias.content == live.content


async def test_live_does_no_io(hanging_port: int) -> None:
    """Liveness answers at once even when the database hangs and Redis is down."""
    settings = make_settings(
        database_url=f"postgresql+asyncpg://slipway:pw@127.0.0.1:{hanging_port}/slipway",
        redis_url=unreachable_redis_url(),
    )
    async with serve(settings) as http:
        start = time.perf_counter()
        live = await http.get("/health/live")
        alias = await http.get("/health")
        elapsed = time.perf_counter() - start

    assert live.status_code == 200
    assert alias.status_code == 200
    # Any database round trip would wait for the check timeout (seconds) instead.
    assert elapsed < CHECK_TIMEOUT_SECONDS / 2


# --- ready ----------------------------------------------------------------------------------


async def test_ready_checks_the_database(client: httpx.AsyncClient, backend: str) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    database = body["checks"]["database"]
    assert database["status"] == "ok"
    assert database["required"] is True
    assert isinstance(database["latency_ms"], float | int)
    assert 0 <= database["latency_ms"] < 2000
    assert body["checks"]["redis"]["status"] == "skipped"


async def test_ready_503_when_database_unreachable() -> None:
    settings = make_settings(database_url=unreachable_postgres_url())
    async with serve(settings) as http:
        start = time.perf_counter()
        response = await http.get("/health/ready")
        elapsed = time.perf_counter() - start

    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["request_id"] == response.headers["x-request-id"]
    assert response.headers["x-content-type-options"] == "nosniff"
    checks = error["details"]["checks"]
    assert error["details"]["status"] == "failing"
    assert checks["database"]["status"] == "failing"
    assert checks["database"]["required"] is True
    assert checks["database"]["error"]
    assert checks["redis"]["status"] == "skipped"
    # Each check runs under a short timeout; a dead dependency never hangs the probe.
    assert elapsed < 5


async def test_ready_times_out_on_a_hanging_database(hanging_port: int) -> None:
    settings = make_settings(
        database_url=f"postgresql+asyncpg://slipway:pw@127.0.0.1:{hanging_port}/slipway"
    )
    async with serve(settings) as http:
        start = time.perf_counter()
        response = await http.get("/health/ready")
        elapsed = time.perf_counter() - start

    assert response.status_code == 503
    database = response.json()["error"]["details"]["checks"]["database"]
    assert database["status"] == "failing"
    assert database["error"] == "timeout"
    assert CHECK_TIMEOUT_SECONDS <= elapsed < CHECK_TIMEOUT_SECONDS + 3


async def test_failed_readiness_is_logged() -> None:
    settings = make_settings(database_url=unreachable_postgres_url())
    async with serve(settings) as http:
        stream = io.StringIO()
        configure_logging("INFO", "json", stream=stream)
        await http.get("/health/ready")

    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert [(r["route"], r["status"]) for r in requests] == [("/health/ready", 503)]


@pytest.mark.redis
async def test_ready_with_real_redis(tmp_path: Path, redis_server: Any) -> None:
    settings = make_settings(database_url=sqlite_url(tmp_path), redis_url=redis_server.url())
    async with serve(settings) as http:
        response = await http.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    redis = body["checks"]["redis"]
    assert redis["status"] == "ok"
    assert redis["latency_ms"] is not None


async def test_optional_redis_down_is_degraded(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=sqlite_url(tmp_path), redis_url=unreachable_redis_url(), redis_required=False
    )
    async with serve(settings) as http:
        response = await http.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"]["status"] == "ok"
    assert body["checks"]["redis"] | {"error": None} == {
        "status": "failing",
        "required": False,
        "latency_ms": None,
        "error": None,
    }
    assert body["checks"]["redis"]["error"]


async def test_required_redis_down_is_503(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=sqlite_url(tmp_path), redis_url=unreachable_redis_url(), redis_required=True
    )
    async with serve(settings) as http:
        response = await http.get("/health/ready")

    assert response.status_code == 503
    details = response.json()["error"]["details"]
    assert details["checks"]["redis"]["status"] == "failing"
    assert details["checks"]["redis"]["required"] is True
    assert details["checks"]["database"]["status"] == "ok"


# --- info -----------------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"git_sha": "0123abc", "app_name": "Slipway"}])
async def test_info(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.get("/info")

    assert response.status_code == 200
    assert response.json() == {
        "name": "Slipway",
        "version": settings.app_version,
        "environment": "testing",
        "git_sha": "0123abc",
    }


@pytest.mark.parametrize("settings_overrides", [{"git_sha": None}])
async def test_info_without_git_sha(client: httpx.AsyncClient) -> None:
    response = await client.get("/info")

    assert response.json()["git_sha"] is None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_fast_liveness_routes_match_their_documentation(client: httpx.AsyncClient) -> None:
    """The probes answer from plain routes but stay documented with the LiveRead schema."""
    schema = (await client.get("/openapi.json")).json()
    for path in ("/health/live", "/health"):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert response.headers["x-request-id"]
        assert (await client.head(path)).status_code == 200
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert ok["schema"]["$ref"].endswith("/LiveRead")
