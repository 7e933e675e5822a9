"""OWASP API4:2023 Unrestricted Resource Consumption.

Every way a single request or client could make the service work without bound is capped:
request bodies (declared or chunked), page sizes (declared on every list operation), the
length and shape of searches, order sizes, report ranges, and the request rate per client,
with stricter named policies where a request is expensive (search, orders, login).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from slipway.catalog.search import MAX_TERMS, fts5_query
from slipway.orders.schemas import MAX_LINES, MAX_QUANTITY
from slipway.platform.settings import Settings
from tests.owasp.conftest import (
    create_product,
    new_admin,
    new_customer,
    new_staff,
    operations,
    place_order,
)

MAX_PAGE = 100


async def test_oversized_bodies_are_refused_with_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    body = b'{"email": "' + b"a" * settings.max_body_size + b'@example.com"}'

    response = await client.post(
        "/api/v1/auth/register", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_oversized_chunked_bodies_are_refused_with_413(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(settings.max_body_size // 65536 + 2):
            yield b"x" * 65536

    response = await client.post(
        "/api/v1/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 413


def test_every_list_operation_caps_its_page_size(app: FastAPI) -> None:
    lists = []
    for method, path, operation in operations(app):
        parameters = {p["name"]: p for p in operation.get("parameters", [])}
        response = operation["responses"].get("200", {})
        ref = str(response.get("content", {}).get("application/json", {}).get("schema", {}))
        if method == "GET" and "Page_" in ref:
            lists.append(path)
            limit = parameters["limit"]["schema"]
            assert limit["maximum"] <= MAX_PAGE, path
            assert limit.get("default", MAX_PAGE) <= MAX_PAGE, path

    assert {"/api/v1/products", "/api/v1/orders", "/api/v1/users"} <= set(lists)


@pytest.mark.parametrize("path", ["/api/v1/products", "/api/v1/orders", "/api/v1/users"])
async def test_page_sizes_above_the_cap_are_refused(
    client: httpx.AsyncClient, app: FastAPI, path: str
) -> None:
    admin = await new_admin(client, app)

    too_many = await client.get(path, params={"limit": MAX_PAGE + 1}, headers=admin.headers)
    at_cap = await client.get(path, params={"limit": MAX_PAGE}, headers=admin.headers)

    assert too_many.status_code == 422
    assert at_cap.status_code == 200


async def test_search_terms_are_bounded(client: httpx.AsyncClient) -> None:
    too_long = await client.get("/api/v1/products", params={"q": "k" * 201})
    at_cap = await client.get("/api/v1/products", params={"q": "kettle " * 28})

    assert too_long.status_code == 422
    assert at_cap.status_code == 200
    # However many words fit in 200 characters, the full-text expression stays bounded.
    expression = fts5_query(" ".join(f"w{i}" for i in range(60)))
    assert expression is not None
    assert expression.count('"') // 2 <= MAX_TERMS


async def test_orders_are_bounded_in_lines_and_quantities(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    customer = await new_customer(client, app)
    lines = [{"product_id": i + 1, "quantity": 1} for i in range(MAX_LINES + 1)]

    too_many_lines = await place_order(client, customer, product["id"], extra={"items": lines})
    too_many_units = await place_order(client, customer, product["id"], quantity=MAX_QUANTITY + 1)

    assert too_many_lines.status_code == 422
    assert too_many_units.status_code == 422


async def test_report_ranges_are_bounded(client: httpx.AsyncClient, app: FastAPI) -> None:
    staff = await new_staff(client, app)

    response = await client.post(
        "/api/v1/reports/sales",
        json={"start": "2020-01-01", "end": "2025-12-31"},
        headers=staff.headers,
    )

    assert response.status_code == 422


class TestRateLimits:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "rate_limit_default": "8/minute",
            "rate_limit_policies": {"search": "3/minute"},
        }

    async def test_each_client_gets_a_bounded_number_of_requests(
        self, client: httpx.AsyncClient
    ) -> None:
        statuses = [
            (await client.get("/api/v1/products", params={"limit": 1})).status_code
            for _ in range(10)
        ]

        assert statuses[:8] == [200] * 8
        assert statuses[8:] == [429, 429]

    async def test_expensive_searches_have_a_stricter_budget(
        self, client: httpx.AsyncClient
    ) -> None:
        searches = [await client.get("/api/v1/products", params={"q": "kettle"}) for _ in range(4)]
        listing = await client.get("/api/v1/products")

        assert [r.status_code for r in searches] == [200, 200, 200, 429]
        assert searches[-1].headers["retry-after"].isdigit()
        assert listing.status_code == 200  # plain listing is still within the default budget

    async def test_health_probes_are_never_limited(self, client: httpx.AsyncClient) -> None:
        statuses = {(await client.get("/health/live")).status_code for _ in range(20)}

        assert statuses == {200}
