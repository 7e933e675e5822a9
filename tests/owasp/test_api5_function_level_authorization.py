"""OWASP API5:2023 Broken Function Level Authorization.

Every operation in the schema is called as a customer, as staff and as an admin; the set
each role is refused (403) must be exactly the declared privileged set. A new staff or admin
endpoint that forgets its dependency shows up here as missing from the refused set, and an
undeclared method is a 405 listing the real ones, never a way around the check.
"""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.identity.conftest import Account
from tests.owasp.conftest import fill_path, new_admin, new_customer, new_staff, operations

STAFF_ONLY = {
    ("POST", "/api/v1/products"),
    ("PATCH", "/api/v1/products/{product_id}"),
    ("POST", "/api/v1/products/{product_id}/archive"),
    ("POST", "/api/v1/products/{product_id}/restock"),
    ("POST", "/api/v1/orders/{order_id}/status"),
    ("POST", "/api/v1/reports/sales"),
    ("GET", "/api/v1/reports/{report_id}"),
    ("GET", "/api/v1/reports/{report_id}/download"),
    ("GET", "/api/v1/dashboard"),
}
#: Every webhook operation is staff-only (the router's dependency).
STAFF_PREFIXES = ("/api/v1/webhooks",)
ADMIN_ONLY = {
    ("GET", "/api/v1/users"),
    ("PATCH", "/api/v1/users/{user_id}/role"),
    ("POST", "/api/v1/users/{user_id}/deactivate"),
}
#: Self-service operations that end the caller's own session or account: not privileged, and
#: left out of the sweep so the caller's token survives it.
SESSION_ENDING = {
    ("POST", "/api/v1/auth/logout"),
    ("POST", "/api/v1/auth/logout-all"),
    ("DELETE", "/api/v1/users/me"),
}


def _staff_only(app: FastAPI) -> set[tuple[str, str]]:
    return STAFF_ONLY | {
        (method, path) for method, path, _ in operations(app) if path.startswith(STAFF_PREFIXES)
    }


async def _refused(
    client: httpx.AsyncClient, app: FastAPI, account: Account
) -> set[tuple[str, str]]:
    refused: set[tuple[str, str]] = set()
    for method, path, operation in operations(app):
        if (method, path) in SESSION_ENDING:
            continue
        response = await client.request(
            method, fill_path(path, operation), json={}, headers=account.headers
        )
        if operation.get("security"):  # the caller's token is accepted everywhere
            assert response.status_code != 401, (method, path, response.text)
        if response.status_code == 403 and response.json()["error"]["code"] == "forbidden":
            refused.add((method, path))
    return refused


async def test_customers_are_refused_exactly_the_staff_and_admin_functions(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)

    refused = await _refused(client, app, customer)

    assert refused == _staff_only(app) | ADMIN_ONLY


async def test_staff_are_refused_exactly_the_admin_functions(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)

    refused = await _refused(client, app, staff)

    assert refused == ADMIN_ONLY


async def test_admins_are_refused_nothing(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await new_admin(client, app)

    assert await _refused(client, app, admin) == set()


async def test_undeclared_methods_are_405_with_the_real_ones(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)

    delete = await client.delete("/api/v1/products/1", headers=customer.headers)
    put = await client.put("/api/v1/users/me", json={}, headers=customer.headers)

    assert delete.status_code == put.status_code == 405
    assert delete.headers["allow"] == "GET, PATCH"
    assert put.headers["allow"] == "GET, PATCH, DELETE"
