"""Login 5/minute per IP and per username (also across instances sharing Redis);
registration and reset requests are limited too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from slipway.app import create_app
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.identity.conftest import LOGIN, PASSWORD, register


def from_ip(n: int) -> dict[str, str]:
    # The test client is 127.0.0.1, a trusted proxy (FORWARDED_ALLOW_IPS): each request
    # can come from its own client address, so only the username budget is shared.
    return {"X-Forwarded-For": f"203.0.113.{n}"}


async def login_from(client: httpx.AsyncClient, email: str, ip: int) -> httpx.Response:
    return await client.post(
        LOGIN, data={"username": email, "password": PASSWORD}, headers=from_ip(ip)
    )


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


async def test_sixth_login_for_one_username_gets_429(client: httpx.AsyncClient) -> None:
    await register(client, "popular@example.com")

    statuses = [
        (await login_from(client, "popular@example.com", ip)).status_code for ip in range(5)
    ]
    sixth = await login_from(client, "POPULAR@example.com ", 99)

    assert statuses == [200] * 5
    assert_rate_limited(sixth)
    # Another account from that last address is not affected.
    await register(client, "quiet@example.com")
    assert (await login_from(client, "quiet@example.com", 99)).status_code == 200


async def test_sixth_login_from_one_ip_gets_429(client: httpx.AsyncClient) -> None:
    statuses = [
        (await login_from(client, f"spray{n}@example.com", 7)).status_code for n in range(5)
    ]

    assert statuses == [401] * 5
    assert_rate_limited(await login_from(client, "spray5@example.com", 7))


async def test_registration_is_rate_limited(client: httpx.AsyncClient) -> None:
    for n in range(10):
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": f"bulk{n}@example.com", "password": PASSWORD},
        )
        assert response.status_code == 202

    eleventh = await client.post(
        "/api/v1/auth/register", json={"email": "bulk10@example.com", "password": PASSWORD}
    )

    assert_rate_limited(eleventh)


async def test_reset_requests_are_rate_limited(client: httpx.AsyncClient) -> None:
    for n in range(5):
        response = await client.post(
            "/api/v1/auth/password-reset/request",
            json={"email": "someone@example.com"},
            headers=from_ip(n),
        )
        assert response.status_code == 202

    assert_rate_limited(
        await client.post(
            "/api/v1/auth/password-reset/request",
            json={"email": "someone@example.com"},
            headers=from_ip(50),
        )
    )


# --- two app instances sharing Redis ------------------------------------------------------


@asynccontextmanager
async def instance(settings: Settings, port: int) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", port)),
            base_url="http://testserver",
        ) as http,
    ):
        yield http


@pytest.fixture
def shared_redis_settings(settings: Settings, redis_server: Any) -> Settings:
    run = uuid.uuid4().hex[:12]
    return make_settings(
        database_url=settings.database_url,
        redis_url=redis_server.url(),
        # The session's Redis is shared by every test: keep this test's counters apart.
        rate_limit_key_prefix=f"test:{run}:ratelimit",
        cache_prefix=f"test-{run}",
    )


@pytest.mark.redis
async def test_login_limit_holds_across_two_instances(shared_redis_settings: Settings) -> None:
    async with (
        instance(shared_redis_settings, 50010) as first,
        instance(shared_redis_settings, 50011) as second,
    ):
        await register(first, "shared@example.com")
        statuses = []
        for ip in range(5):
            client = first if ip % 2 else second
            statuses.append((await login_from(client, "shared@example.com", ip)).status_code)

        sixth_first = await login_from(first, "shared@example.com", 90)
        sixth_second = await login_from(second, "shared@example.com", 91)

    assert statuses == [200] * 5
    assert_rate_limited(sixth_first)
    assert_rate_limited(sixth_second)


@pytest.mark.redis
async def test_slow_down_is_shared_across_instances(
    shared_redis_settings: Settings,
) -> None:
    settings = shared_redis_settings.model_copy(update={"login_slowdown_after_failures": 2})
    async with instance(settings, 50012) as first, instance(settings, 50013) as second:
        await register(first, "guessed@example.com")
        for ip, client in enumerate((first, second)):
            wrong = await client.post(
                LOGIN,
                data={"username": "guessed@example.com", "password": "guess"},
                headers=from_ip(ip),
            )
            assert wrong.status_code == 401

        slowed = await login_from(second, "guessed@example.com", 9)

    assert slowed.status_code == 429
    assert slowed.json()["error"]["code"] == "login_slowed_down"
