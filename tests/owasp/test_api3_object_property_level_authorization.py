"""OWASP API3:2023 Broken Object Property Level Authorization (mass assignment and excessive
data exposure).

Input models forbid every field a caller may not set (role, verification, stock, version,
ids), or ignore what the server computes itself (prices, totals, owners); output models list
what may be shown, and no response schema carries a password, hash or secret beyond the one
place a secret must be handed over once.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.owasp.conftest import create_product, new_customer, new_staff, operations, place_order

#: The one response that must carry a secret: a webhook's signing secret, shown once.
SECRET_BEARING = {("WebhookEndpointWithSecret", "secret")}
_SENSITIVE = re.compile(r"password|hash|secret|private_key|api_key", re.IGNORECASE)


@pytest.mark.parametrize(
    "extra",
    [{"role": "admin"}, {"email_verified": True}, {"is_active": True}, {"id": "x"}],
)
async def test_registration_refuses_privileged_fields(
    client: httpx.AsyncClient, extra: dict[str, Any]
) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        json={"email": "mass@example.com", "password": "correct horse battery", **extra},
    )

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"].endswith(next(iter(extra)))


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "admin"},
        {"email_verified": True},
        {"is_active": False},
        {"email": "takeover@example.com"},
        {"password_hash": "$argon2id$forged"},
    ],
)
async def test_own_account_updates_accept_only_the_allowlisted_fields(
    client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]
) -> None:
    customer = await new_customer(client, app, verified=False)

    response = await client.patch(
        "/api/v1/users/me", json={"full_name": "Mal", **extra}, headers=customer.headers
    )
    me = (await client.get("/api/v1/users/me", headers=customer.headers)).json()

    assert response.status_code == 422
    assert me["role"] == "customer"
    assert me["email_verified"] is False
    assert me["full_name"] is None  # nothing of the refused request was applied


@pytest.mark.parametrize(
    "extra", [{"stock": 999_999}, {"version": 1}, {"status": "archived"}, {"id": 7}]
)
async def test_product_updates_refuse_server_managed_fields(
    client: httpx.AsyncClient, app: FastAPI, extra: dict[str, Any]
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff, stock=5)
    current = await client.get(f"/api/v1/products/{product['id']}")

    response = await client.patch(
        f"/api/v1/products/{product['id']}",
        json={"name": "Renamed", **extra},
        headers={**staff.headers, "If-Match": current.headers["etag"]},
    )
    after = (await client.get(f"/api/v1/products/{product['id']}")).json()

    assert response.status_code == 422
    assert (after["name"], after["stock"], after["status"]) == ("Kettle", 5, "active")


async def test_client_supplied_prices_owners_and_statuses_are_ignored(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff, price_minor=4200)
    customer = await new_customer(client, app)
    victim = await new_customer(client, app)
    victim_id = (await client.get("/api/v1/users/me", headers=victim.headers)).json()["id"]

    response = await place_order(
        client,
        customer,
        product["id"],
        quantity=2,
        extra={
            "total_minor": 1,
            "user_id": victim_id,
            "status": "shipped",
            "items": [
                {"product_id": product["id"], "quantity": 2, "unit_price_minor": 1, "price": 1}
            ],
        },
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert order["total_minor"] == 8400
    assert order["lines"][0]["unit_price_minor"] == 4200
    assert order["user_id"] != victim_id
    assert order["status"] == "pending"


async def test_customers_cannot_see_archived_products(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)
    staff = await new_staff(client, app)

    as_customer = await client.get(
        "/api/v1/products", params={"status": "archived"}, headers=customer.headers
    )
    anonymous = await client.get("/api/v1/products", params={"status": "archived"})
    as_staff = await client.get(
        "/api/v1/products", params={"status": "archived"}, headers=staff.headers
    )

    assert as_customer.status_code == anonymous.status_code == 403
    assert as_staff.status_code == 200


def _response_models(schema: dict[str, Any]) -> set[str]:
    """Every component schema reachable from a 2xx response."""
    components = schema["components"]["schemas"]
    pending: list[Any] = []
    for _method, _path, operation in operations_of(schema):
        for status, response in operation.get("responses", {}).items():
            if str(status).startswith("2"):
                pending.append(response.get("content", {}))
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    pending.append(components[name])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return seen


def operations_of(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
    ]


def test_no_response_schema_exposes_credentials(app: FastAPI) -> None:
    schema = app.openapi()
    models = _response_models(schema)
    exposed = {
        (model, prop)
        for model in models
        for prop in schema["components"]["schemas"][model].get("properties", {})
        if _SENSITIVE.search(prop)
    }

    assert {"UserRead", "ProductRead", "OrderRead", "TokenPair"} <= models
    assert len(operations(app)) == len(operations_of(schema))
    assert exposed <= SECRET_BEARING, exposed
