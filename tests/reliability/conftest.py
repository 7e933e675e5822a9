"""Reliability scenarios: every test here is marked `reliability` (and runs real processes),
and each reports its figures in a "reliability figures" section of the pytest summary, so
they show in CI output without `-s` (and in JUnit XML as properties).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.support import AppServer, ProxiedShop, seed_shop, server_env, start_proxy
from tests.support.services import PostgresService, RedisService

HERE = Path(__file__).parent
FIGURES = pytest.StashKey[list[tuple[str, str]]]()
RecordProperty = Callable[[str, object], None]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the markers must be on the items before `-m` selects among them.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.slow)


class Figures:
    """The numbers behind a scenario's claim: printed in the summary, kept in the XML report."""

    def __init__(self, nodeid: str, config: pytest.Config, record: RecordProperty) -> None:
        self.nodeid = nodeid
        self.config = config
        self.record_property = record

    def __call__(self, claim: str, **values: Any) -> None:
        text = ", ".join(f"{name}={_format(value)}" for name, value in values.items())
        self.config.stash.setdefault(FIGURES, []).append((self.nodeid, f"{claim}: {text}"))
        self.record_property(claim, text)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@pytest.fixture
def figures(request: pytest.FixtureRequest, record_property: RecordProperty) -> Figures:
    return Figures(request.node.nodeid, request.config, record_property)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if not lines:
        return
    terminalreporter.section("reliability figures")
    for nodeid, text in lines:
        terminalreporter.write_line(f"{nodeid.split('::', 1)[-1]}: {text}")


@pytest.fixture(scope="package")
def _proxied_shop(
    postgres_server: PostgresService,
    pg_template: str,
    redis_server: RedisService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxiedShop]:
    """Two gunicorn servers (2 workers each) behind the repository's Nginx, sharing a fresh
    PostgreSQL database and the session's Redis (under this run's own key prefixes).

    One stack for the package: a server boots in 10-20 s on a busy 2-core host, and every
    scenario leaves the stack serving (restarted, reloaded or respawned)."""
    workdir = tmp_path_factory.mktemp("reliability")
    run = uuid.uuid4().hex[:8]
    dbname = f"reliability_{run}"
    postgres_server.create_database(dbname, template=pg_template)
    env = server_env(
        postgres_server.url(dbname),
        REDIS_URL=redis_server.url(),
        CACHE_PREFIX=f"slipway-rel-{run}",
        RATE_LIMIT_KEY_PREFIX=f"slipway-rel:{run}",
        EVENTS_CHANNEL=f"slipway-rel:{run}:events",
    )
    servers = [AppServer(name, env, workdir) for name in ("app-a", "app-b")]
    stack: ProxiedShop | None = None
    try:
        # In parallel: each boot is mostly waiting for its workers to import the app.
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            list(pool.map(lambda server: server.start(), servers))
        shop = seed_shop(postgres_server, dbname, servers[0].url("/api/v1/auth/login"))
        stack = ProxiedShop(servers, start_proxy(workdir, servers), shop)
        yield stack
    finally:
        if stack is not None:
            stack.close()
        else:
            for server in servers:
                server.close()
        postgres_server.drop_database(dbname)


@pytest.fixture
def proxied_shop(_proxied_shop: ProxiedShop) -> ProxiedShop:
    """The package's proxied stack, checked healthy before the scenario starts."""
    _proxied_shop.ensure_ready()
    return _proxied_shop
