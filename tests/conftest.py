"""Shared fixtures: settings, a migrated database per test (SQLite and PostgreSQL), the app
and an async client. Real PostgreSQL and Redis come from tests.support.plugin."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

# Tests must never pick up a developer's secrets directory or .env.
os.environ["SECRETS_DIR"] = "/nonexistent-slipway-secrets"

from slipway.app import create_app
from slipway.platform.db.migrate import upgrade
from slipway.platform.settings import Settings

pytest_plugins = ["tests.support.plugin"]

TEST_SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: explicit values only, no .env, no secrets directory."""
    values: dict[str, Any] = {
        "environment": "testing",
        "secret_key": TEST_SECRET,
        "log_format": "json",
        "log_level": "INFO",
        "database_url": "sqlite+aiosqlite:///:memory:",
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(make_settings(database_url=f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_template(postgres_server: Any) -> str:
    name = "slipway_template"
    postgres_server.create_database(name)
    upgrade(make_settings(database_url=postgres_server.url(name)))
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Parametrises API tests over both database backends."""
    return str(request.param)


def _sqlite_copy(template: Path, tmp_path: Path) -> str:
    target = tmp_path / "test.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test: a copy of the template."""
    if backend == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("pg_template")
    name = f"t_{uuid.uuid4().hex[:16]}"
    server.create_database(name, template=template)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a module or test to change the app's settings."""
    return {}


@pytest.fixture
def settings(database_url: str, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(database_url=database_url, **settings_overrides)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ) as http,
    ):
        yield http
