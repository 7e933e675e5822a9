"""GET /api/v1/dashboard: correct figures, a bounded number of SQL statements whatever the
data size, and a short-lived cache. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from slipway.orders.models import Order, OrderLine
from slipway.platform.db.base import utcnow
from tests.factories import (
    change_status,
    create_product,
    customer,
    insert_products,
    place_order,
    product_row,
    session_factory,
    staff,
)

DASHBOARD = "/api/v1/dashboard"
BUSINESS_TABLES = ("orders", "order_lines", "products")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False, "cache_dashboard_ttl": 1}


@contextmanager
def business_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """SQL statements that read the business tables (auth lookups are not counted)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if any(table in statement for table in BUSINESS_TABLES):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def bulk_orders(app: FastAPI, user_id: uuid.UUID, product_ids: list[int], n: int) -> None:
    now = utcnow()
    orders = [
        {"id": uuid.uuid4(), "user_id": user_id, "status": "paid", "total_minor": 500,
         "currency": "USD", "created_at": now, "updated_at": now}
        for _ in range(n)
    ]  # fmt: skip
    lines = [
        {"order_id": order["id"], "product_id": product_ids[k % len(product_ids)],
         "quantity": 1, "unit_price_minor": 500}
        for k, order in enumerate(orders)
    ]  # fmt: skip
    async with session_factory(app)() as session, session.begin():
        await session.execute(insert(Order), orders)
        await session.execute(insert(OrderLine), lines)


async def test_dashboard_figures(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    kettle = await create_product(client, admin.headers, name="Kettle", price_minor=3000, stock=40)
    mug = await create_product(client, admin.headers, name="Mug", price_minor=500, stock=12)
    await create_product(client, admin.headers, name="Rare lamp", stock=2)
    archived = await create_product(client, admin.headers, name="Old lamp", stock=0)
    await client.post(f"/api/v1/products/{archived['id']}/archive", headers=admin.headers)
    buyer = await customer(client, app)

    async def order(lines: list[tuple[int, int]]) -> str:
        response = await place_order(
            client, buyer.headers, [{"product_id": p, "quantity": q} for p, q in lines]
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    await order([(kettle["id"], 1), (mug["id"], 4)])  # 5000, pending
    paid = await order([(kettle["id"], 2)])  # 6000
    await change_status(client, admin.headers, paid, "paid")
    cancelled = await order([(mug["id"], 5)])  # 2500, cancelled: restocks, not a top seller
    await change_status(client, admin.headers, cancelled, "cancelled")
    old = await order([(kettle["id"], 10)])  # 30000, but 40 days ago
    async with session_factory(app)() as session, session.begin():
        await session.execute(
            update(Order).where(Order.id == uuid.UUID(old))
            .values(created_at=utcnow() - timedelta(days=40))
        )  # fmt: skip

    response = await client.get(DASHBOARD, params={"days": 30}, headers=admin.headers)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["days"] == 30
    assert {s["status"]: (s["orders"], s["revenue_minor"]) for s in body["by_status"]} == {
        "pending": (1, 5000),
        "paid": (1, 6000),
        "cancelled": (1, 2500),
    }
    # Top sellers by units, cancelled orders excluded.
    assert [(p["name"], p["quantity"], p["revenue_minor"]) for p in body["top_products"]] == [
        ("Mug", 4, 2000),
        ("Kettle", 3, 9000),
    ]
    # Low stock (<= 10): active products only (not the archived lamp), lowest first.
    assert [(p["name"], p["stock"]) for p in body["low_stock"]] == [("Rare lamp", 2), ("Mug", 8)]

    wider = await client.get(DASHBOARD, params={"days": 60, "low_stock_threshold": 30},
                             headers=admin.headers)  # fmt: skip
    statuses = {s["status"]: s["orders"] for s in wider.json()["by_status"]}
    assert statuses["pending"] == 2
    assert [p["name"] for p in wider.json()["low_stock"]] == ["Rare lamp", "Mug", "Kettle"]

    buyer_view = await client.get(DASHBOARD, headers=buyer.headers)
    assert buyer_view.status_code == 403
    assert (await client.get(DASHBOARD)).status_code == 401
    for params in ({"days": 0}, {"days": 367}, {"low_stock_threshold": -1}):
        assert (
            await client.get(DASHBOARD, params=params, headers=admin.headers)
        ).status_code == 422


async def test_dashboard_costs_a_bounded_number_of_queries_and_is_cached(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    buyer = await customer(client, app)
    engine: AsyncEngine = app.state.services.engine
    product_ids = await insert_products(app, [product_row(i, stock=i) for i in range(30)])

    await bulk_orders(app, buyer.id, product_ids[:3], 5)
    with business_statements(engine) as small:
        first = await client.get(DASHBOARD, params={"days": 7}, headers=admin.headers)
    assert first.status_code == 200

    # Served from the cache while fresh: no business query at all, same bytes.
    await bulk_orders(app, buyer.id, product_ids, 300)
    with business_statements(engine) as cached:
        again = await client.get(DASHBOARD, params={"days": 7}, headers=admin.headers)
    assert cached == []
    assert again.content == first.content

    # Once the short TTL (1 s here) has passed it is rebuilt, at the same cost with 60x
    # the orders and 10x the products: the cost does not grow with the data.
    await asyncio.sleep(1.2)
    with business_statements(engine) as large:
        rebuilt = await client.get(DASHBOARD, params={"days": 7}, headers=admin.headers)
    paid = {s["status"]: s["orders"] for s in rebuilt.json()["by_status"]}["paid"]
    assert paid == 305
    assert len(small) == len(large) == 3, (small, large)
    assert len(rebuilt.json()["top_products"]) == 10
    assert len(rebuilt.json()["low_stock"]) == 11  # stock 0..10
