"""Helpers for the OWASP API Security Top 10 (2023) modules.

Each module proves one risk's defence against the real app: in-process, on PostgreSQL (the
production database; the area tests cover SQLite too), accounts made through the API with
the identity test helpers.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from slipway.identity.models import Role, User
from tests.identity.conftest import (
    PASSWORD,
    Account,
    login_ok,
    new_account,
    new_admin,
    outbox,
    register,
    set_role,
)

__all__ = [
    "PASSWORD",
    "Account",
    "create_product",
    "fill_path",
    "login_ok",
    "new_account",
    "new_admin",
    "new_customer",
    "new_staff",
    "operations",
    "outbox",
    "place_order",
    "register",
    "set_role",
]

ZERO_UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def backend() -> str:
    """PostgreSQL only: these modules test defences, not database portability."""
    return "postgresql"


async def mark_verified(app: FastAPI, email: str) -> None:
    factory = app.state.services.session_factory
    async with factory() as session, session.begin():
        await session.execute(update(User).where(User.email == email).values(email_verified=True))


async def new_customer(
    client: httpx.AsyncClient, app: FastAPI, *, verified: bool = True
) -> Account:
    account = await new_account(client)
    if verified:
        await mark_verified(app, account.email)
    return account


async def new_staff(client: httpx.AsyncClient, app: FastAPI) -> Account:
    email = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    await register(client, email)
    await set_role(app, email, Role.STAFF)
    await mark_verified(app, email)
    return await login_ok(client, email)


async def create_product(
    client: httpx.AsyncClient, staff: Account, *, stock: int = 100, price_minor: int = 1250
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/products",
        json={
            "sku": f"OWASP-{uuid.uuid4().hex[:10]}",
            "name": "Kettle",
            "price_minor": price_minor,
            "stock": stock,
        },
        headers=staff.headers,
    )
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


async def place_order(
    client: httpx.AsyncClient,
    account: Account,
    product_id: int,
    *,
    quantity: int = 1,
    key: str | None = None,
    extra: dict[str, Any] | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"items": [{"product_id": product_id, "quantity": quantity}]}
    body.update(extra or {})
    return await client.post(
        "/api/v1/orders",
        json=body,
        headers={**account.headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path template, operation object) for every operation in the OpenAPI schema."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                found.append((method.upper(), path, operation))
    return found


def fill_path(path: str, operation: dict[str, Any]) -> str:
    """The path with every parameter replaced by a well-formed value (a UUID or 1)."""
    kinds = {
        p["name"]: (p.get("schema") or {}).get("format")
        for p in operation.get("parameters", [])
        if p.get("in") == "path"
    }
    return re.sub(
        r"\{(\w+)\}", lambda m: ZERO_UUID if kinds.get(m.group(1)) == "uuid" else "1", path
    )


_ = (new_admin, outbox)
