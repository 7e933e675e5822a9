"""pytest plugin: one real PostgreSQL and one real Redis per test session.

Register from the top-level conftest: `pytest_plugins = ["tests.support.plugin"]`.

- `postgres_server` / `redis_server`: session fixtures. Tests needing a database of their
  own call `postgres_server.create_database(name)`; they never stop the shared servers
  (start a private `PostgresServer` / `RedisServer` for that).
- TEST_DATABASE_URL / TEST_REDIS_URL: use servers provided from outside (CI service
  containers) instead of starting ours.
- The servers start with the session so the header can show their versions;
  SLIPWAY_NO_SERVICES=1 defers that to the first test that asks for one.
- A service that cannot start skips the tests that need it, or fails them under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Generic, TypeVar

import pytest

from .services import (
    ExternalPostgres,
    ExternalRedis,
    PostgresServer,
    PostgresService,
    RedisServer,
    RedisService,
    ServiceUnavailable,
    require_or_skip,
)

ENV_DATABASE_URL = "TEST_DATABASE_URL"
ENV_REDIS_URL = "TEST_REDIS_URL"
ENV_NO_SERVICES = "SLIPWAY_NO_SERVICES"

S = TypeVar("S", PostgresService, RedisService)


class LazyService(Generic[S]):
    """Starts a service on first use, once; remembers why it could not start."""

    def __init__(self, name: str, factory: Callable[[], S]) -> None:
        self.name = name
        self._factory: Callable[[], S] = factory
        self._service: S | None = None
        self._error: str | None = None

    def get(self) -> S:
        if self._service is None and self._error is None:
            try:
                self._service = self._factory()
            except Exception as error:  # reported to every test that needs it
                self._error = f"{self.name} unavailable: {error}"
        if self._service is None:
            raise ServiceUnavailable(self._error)
        return self._service

    def describe(self) -> str:
        """Version for the report header, or why there is none."""
        try:
            return self.get().version
        except Exception as error:  # the header must never break the run
            return f"unavailable ({str(error).splitlines()[0]})"

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
            self._service = None


def _postgres() -> PostgresService:
    url = os.environ.get(ENV_DATABASE_URL)
    if not url:
        return PostgresServer().start()
    external = ExternalPostgres(url)
    external.fetchval("SELECT 1", timeout=10.0)  # unreachable: say so once, up front
    return external


def _redis() -> RedisService:
    url = os.environ.get(ENV_REDIS_URL)
    if not url:
        return RedisServer().start()
    external = ExternalRedis(url)
    if not external.ping():
        raise ServiceUnavailable(f"{ENV_REDIS_URL} does not answer PING")
    return external


class Services:
    def __init__(self) -> None:
        self.postgres: LazyService[PostgresService] = LazyService("postgresql", _postgres)
        self.redis: LazyService[RedisService] = LazyService("redis", _redis)

    def close(self) -> None:
        try:
            self.redis.close()
        finally:
            self.postgres.close()


services_key = pytest.StashKey[Services]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[services_key] = Services()


def pytest_unconfigure(config: pytest.Config) -> None:
    services = config.stash.get(services_key, None)
    if services is not None:
        services.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    if os.environ.get(ENV_NO_SERVICES) or config.option.collectonly:
        return ["postgresql: not started yet, redis: not started yet"]
    services = config.stash[services_key]
    return [f"postgresql: {services.postgres.describe()}, redis: {services.redis.describe()}"]


def _require(lazy: LazyService[S]) -> S:
    try:
        return lazy.get()
    except ServiceUnavailable as error:
        require_or_skip(str(error))


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> PostgresService:
    """The session's PostgreSQL server (ours, or TEST_DATABASE_URL's)."""
    return _require(pytestconfig.stash[services_key].postgres)


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> RedisService:
    """The session's Redis server (ours, or TEST_REDIS_URL's)."""
    return _require(pytestconfig.stash[services_key].redis)
