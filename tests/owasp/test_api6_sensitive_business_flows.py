"""OWASP API6:2023 Unrestricted Access to Sensitive Business Flows.

The flows an attacker automates are limited per client address and per target account:
login (credential stuffing, plus a per-account slowdown that no address rotation escapes),
registration (fake accounts), password reset (mail bombing, account probing) and order
creation (stock hoarding), which also needs a verified address, never oversells and turns
retries into replays instead of duplicates.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from slipway.platform.settings import DEFAULT_RATE_LIMIT_POLICIES
from tests.owasp.conftest import (
    PASSWORD,
    create_product,
    new_customer,
    new_staff,
    place_order,
)

LOGIN = "/api/v1/auth/login"
RESET = "/api/v1/auth/password-reset/request"


def _budget(policy: str) -> int:
    return int(DEFAULT_RATE_LIMIT_POLICIES[policy].split("/")[0])


@asynccontextmanager
async def from_address(app: FastAPI, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client connecting from `address` (the app's lifespan is already running)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
        yield other


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(LOGIN, data={"username": email, "password": password})


async def test_login_attempts_are_limited_per_address(client: httpx.AsyncClient) -> None:
    budget = _budget("login")
    statuses = [
        (await _login(client, f"user{i}@example.com", "wrong password 1")).status_code
        for i in range(budget + 1)
    ]

    assert statuses == [401] * budget + [429]


async def test_login_attempts_are_limited_per_account_across_addresses(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    budget = _budget("login")
    statuses = []
    for i in range(budget + 1):
        async with from_address(app, f"198.51.100.{i + 1}") as other:
            statuses.append((await _login(other, "target@example.com", "guess")).status_code)

    assert statuses[-1] == 429
    assert statuses[:budget] == [401] * budget


class TestLoginSlowdown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # Address and account budgets out of the way: only the slowdown is left to act.
        return {"rate_limit_policies": {"login": "1000/minute"}}

    async def test_repeated_failures_slow_the_account_down(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        customer = await new_customer(client, app)
        failures = []
        for i in range(6):
            async with from_address(app, f"203.0.113.{i + 1}") as other:
                failures.append(await _login(other, customer.email, "wrong password 1"))
        async with from_address(app, "203.0.113.99") as fresh:
            right_password = await _login(fresh, customer.email, PASSWORD)

        slowed = failures[-1]
        assert [r.status_code for r in failures[:5]] == [401] * 5
        assert slowed.status_code == 429
        assert slowed.json()["error"]["code"] == "login_slowed_down"
        assert int(slowed.headers["retry-after"]) >= 1
        # Even the right password waits: the slowdown protects the account, not an address.
        assert right_password.status_code == 429


async def test_registrations_are_limited_per_address(client: httpx.AsyncClient) -> None:
    budget = _budget("register")
    statuses = []
    for _ in range(budget + 1):
        response = await client.post(
            "/api/v1/auth/register",
            json={"email": f"bulk-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD},
        )
        statuses.append(response.status_code)

    assert statuses == [202] * budget + [429]


async def test_password_reset_requests_are_limited_and_reveal_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)
    known = await client.post(RESET, json={"email": customer.email})
    unknown = await client.post(RESET, json={"email": "nobody@example.com"})
    budget = _budget("password_reset")
    more = [
        (await client.post(RESET, json={"email": f"x{i}@example.com"})).status_code
        for i in range(budget - 1)
    ]

    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert more[-1] == 429
    assert more[: budget - 2] == [202] * (budget - 2)


async def test_orders_need_a_verified_address(client: httpx.AsyncClient, app: FastAPI) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    unverified = await new_customer(client, app, verified=False)

    response = await place_order(client, unverified, product["id"])

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "email_not_verified"


async def test_retries_replay_and_stock_is_never_oversold(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff, stock=3)
    buyer = await new_customer(client, app)

    first = await place_order(client, buyer, product["id"], quantity=2, key="retry-me-0001")
    retry = await place_order(client, buyer, product["id"], quantity=2, key="retry-me-0001")
    hoard = await place_order(client, buyer, product["id"], quantity=2)
    stock = (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"]

    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert hoard.status_code == 409
    assert stock == 1


class TestOrderRate:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"rate_limit_policies": {"orders": "3/minute"}}

    async def test_order_creation_is_rate_limited_per_customer(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        staff = await new_staff(client, app)
        product = await create_product(client, staff)
        buyer = await new_customer(client, app)

        statuses = [(await place_order(client, buyer, product["id"])).status_code for _ in range(4)]

        assert statuses == [201, 201, 201, 429]
