"""OWASP API9:2023 Improper Inventory Management.

What is exposed is known and depends on the environment only:
- /docs, /redoc and /openapi.json exist in development and testing, not in staging or
  production (unless production opts in explicitly);
- the test-only routes (/_test/..., /testing/...) exist in ENVIRONMENT=testing and nowhere
  else, development included;
- every documented operation is an operational endpoint or lives under the versioned
  /api/v1 prefix, and the schema states the running version.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import APIRouter
from fastapi.routing import APIRoute

import slipway
from slipway.app import create_app
from tests.conftest import make_settings

DOCS = ("/docs", "/redoc", "/openapi.json")
OPERATIONAL = {"/health", "/health/live", "/health/ready", "/info"}
ENVIRONMENTS = ("development", "testing", "staging", "production")


def routes_for_tests_only() -> list[tuple[str, str]]:
    """(method, concrete path) of every route in a `testing_routes.py` module of the package
    (found on disk: some packages are namespace packages `pkgutil` does not descend into)."""
    found: list[tuple[str, str]] = []
    root = Path(slipway.__file__).parent
    for file in sorted(root.rglob("testing_routes.py")):
        name = ".".join(("slipway", *file.relative_to(root).with_suffix("").parts))
        router = getattr(importlib.import_module(name), "router", None)
        assert isinstance(router, APIRouter), name
        for route in router.routes:
            assert isinstance(route, APIRoute)
            path = re.sub(r"\{[^}]+\}", "probe", route.path)
            found.extend((method, path) for method in sorted(route.methods))
    return found


@asynccontextmanager
async def app_in(
    environment: str, database_url: str, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        environment=environment,
        database_url=database_url,
        allow_embedded_jobs_in_production=True,
        public_base_url="https://api.example.com",
        **overrides,
    )
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as client,
    ):
        yield client


@pytest.mark.parametrize("environment", ENVIRONMENTS)
async def test_docs_exist_only_where_developers_work(environment: str, database_url: str) -> None:
    async with app_in(environment, database_url) as client:
        statuses = {path: (await client.get(path)).status_code for path in DOCS}

    expected = 200 if environment in ("development", "testing") else 404
    assert statuses == dict.fromkeys(DOCS, expected)


async def test_production_docs_need_an_explicit_opt_in(database_url: str) -> None:
    async with app_in(
        "production", database_url, docs_enabled=True, allow_docs_in_production=True
    ) as client:
        statuses = {(await client.get(path)).status_code for path in DOCS}

    assert statuses == {200}


def test_the_testing_routes_are_found() -> None:
    routes = routes_for_tests_only()

    assert len(routes) >= 5
    assert all(path.startswith(("/_test", "/testing")) for _method, path in routes), routes


@pytest.mark.parametrize("environment", ENVIRONMENTS)
async def test_testing_routes_exist_only_in_the_testing_environment(
    environment: str, database_url: str
) -> None:
    routes = routes_for_tests_only()
    async with app_in(environment, database_url) as client:
        statuses = {
            (method, path): (await client.request(method, path, json={})).status_code
            for method, path in routes
        }

    if environment == "testing":
        assert 404 not in statuses.values(), statuses
    else:
        assert set(statuses.values()) == {404}, statuses


async def test_every_documented_path_is_versioned_or_operational(database_url: str) -> None:
    async with app_in("testing", database_url) as client:
        schema = (await client.get("/openapi.json")).json()
        info = (await client.get("/info")).json()

    unversioned = {p for p in schema["paths"] if not p.startswith("/api/v1/")} - OPERATIONAL
    assert unversioned == set()
    assert schema["info"]["version"] == info["version"]
    assert not [p for p in schema["paths"] if p.startswith(("/_test", "/testing", "/debug"))]
