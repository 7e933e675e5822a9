"""POST /api/v1/orders: server-side totals, validation, stock, the confirmation mail job,
and status transitions with restocking. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from slipway.orders.models import Order
from slipway.platform.jobs.models import Job
from tests.factories import (
    ORDERS,
    change_status,
    create_product,
    customer,
    place_order,
    product_stock,
    session_factory,
    staff,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False}


async def order_count(app: FastAPI) -> int:
    async with session_factory(app)() as session:
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def mail_jobs(app: FastAPI, owner: uuid.UUID) -> list[Job]:
    async with session_factory(app)() as session:
        rows = await session.scalars(
            select(Job).where(Job.kind == "mail.send", Job.owner_id == owner)
        )
        return list(rows.all())


async def test_totals_come_from_the_database_not_the_client(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    kettle = await create_product(client, admin.headers, price_minor=2599, stock=5)
    mug = await create_product(client, admin.headers, price_minor=1000, stock=9)
    buyer = await customer(client, app)

    response = await place_order(
        client,
        buyer.headers,
        [
            # Client-sent prices and totals are ignored, never trusted.
            {"product_id": kettle["id"], "quantity": 2, "price": 1, "unit_price_minor": 1},
            {"product_id": mug["id"], "quantity": 3, "total_minor": 0},
        ],
    )

    assert response.status_code == 201, response.text
    order = response.json()
    assert response.headers["location"].endswith(f"{ORDERS}/{order['id']}")
    assert order["total_minor"] == 2 * 2599 + 3 * 1000
    assert (order["status"], order["currency"], order["user_id"]) == (
        "pending",
        "USD",
        str(buyer.id),
    )
    lines = {line["product_id"]: line for line in order["lines"]}
    assert lines[kettle["id"]] == {
        "product_id": kettle["id"],
        "quantity": 2,
        "unit_price_minor": 2599,
    }
    assert lines[mug["id"]] == {"product_id": mug["id"], "quantity": 3, "unit_price_minor": 1000}
    assert await product_stock(app, kettle["id"]) == 3
    assert await product_stock(app, mug["id"]) == 6
    # The product cache was invalidated after the commit: readers see the new stock.
    assert (await client.get(f"/api/v1/products/{kettle['id']}")).json()["stock"] == 3

    readback = await client.get(f"{ORDERS}/{order['id']}", headers=buyer.headers)
    assert readback.json() == order

    # The confirmation mail job was queued for the buyer, after the commit.
    # (Its context is scrubbed once sent, so only the envelope is checked.)
    jobs = await mail_jobs(app, buyer.id)
    assert len(jobs) == 1, [j.payload for j in jobs]
    assert jobs[0].payload["to"] == [buyer.email]
    assert jobs[0].payload["template"] == "order_confirmation"


async def test_invalid_orders_are_422_and_change_nothing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=5)
    pid = product["id"]
    buyer = await customer(client, app)
    line = {"product_id": pid, "quantity": 1}
    cases: list[tuple[str, Any]] = [
        ("zero quantity", {"items": [{"product_id": pid, "quantity": 0}]}),
        ("negative quantity", {"items": [{"product_id": pid, "quantity": -3}]}),
        ("quantity over 1000", {"items": [{"product_id": pid, "quantity": 1001}]}),
        ("huge quantity", {"items": [{"product_id": pid, "quantity": 10**30}]}),
        ("fractional quantity", {"items": [{"product_id": pid, "quantity": 1.5}]}),
        ("text quantity", {"items": [{"product_id": pid, "quantity": "two"}]}),
        ("missing quantity", {"items": [{"product_id": pid}]}),
        ("zero product id", {"items": [{"product_id": 0, "quantity": 1}]}),
        ("product id over int64", {"items": [{"product_id": 2**63, "quantity": 1}]}),
        ("no lines", {"items": []}),
        ("no items key", {}),
        ("items not a list", {"items": line}),
        ("51 lines", {"items": [{"product_id": n + 1, "quantity": 1} for n in range(51)]}),
        ("duplicate lines", {"items": [line, {"product_id": pid, "quantity": 2}]}),
    ]
    for label, body in cases:
        response = await client.post(
            ORDERS, json=body, headers={**buyer.headers, "Idempotency-Key": uuid.uuid4().hex}
        )
        assert response.status_code == 422, (label, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error", label
        assert error["details"], label
        assert all(d["field"].startswith("body") for d in error["details"]), (label, error)

    duplicate = await client.post(
        ORDERS,
        json={"items": [line, line]},
        headers={**buyer.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert f"[{pid}]" in duplicate.json()["error"]["details"][0]["message"]

    unknown = await place_order(
        client, buyer.headers, [line, {"product_id": 99_999, "quantity": 1},
                                {"product_id": 88_888, "quantity": 1}]
    )  # fmt: skip
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_products"
    assert sorted(d["product_id"] for d in unknown.json()["error"]["details"]) == [88_888, 99_999]

    bad_keys = ["k" * 256, "has spaces"]
    for key in bad_keys:
        response = await place_order(client, buyer.headers, [line], key=key)
        assert response.status_code == 422, (key, response.text)
        assert response.json()["error"]["details"][0]["field"] == "header.idempotency-key"
    missing_key = await client.post(ORDERS, json={"items": [line]}, headers=buyer.headers)
    assert missing_key.status_code == 428
    assert missing_key.json()["error"]["code"] == "idempotency_key_required"

    not_json = await client.post(
        ORDERS,
        content=b"{items: oops",
        headers={**buyer.headers, "Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert not_json.status_code == 422

    assert await product_stock(app, pid) == 5
    assert await order_count(app) == 0
    assert await mail_jobs(app, buyer.id) == []


async def test_fifty_lines_are_allowed(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    ids = [
        (await create_product(client, admin.headers, price_minor=100 + n))["id"] for n in range(50)
    ]
    buyer = await customer(client, app)
    response = await place_order(
        client, buyer.headers, [{"product_id": pid, "quantity": 1000 if n == 0 else 1}
                                for n, pid in enumerate(ids)]
    )  # fmt: skip
    assert response.status_code == 409  # 1000 of product 0 exceeds its stock of 10
    response = await place_order(
        client, buyer.headers, [{"product_id": pid, "quantity": 1} for pid in ids]
    )
    assert response.status_code == 201, response.text
    assert len(response.json()["lines"]) == 50
    assert response.json()["total_minor"] == sum(100 + n for n in range(50))


async def test_insufficient_stock_is_409_naming_the_lines(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    scarce = await create_product(client, admin.headers, stock=1)
    empty = await create_product(client, admin.headers, stock=0)
    plenty = await create_product(client, admin.headers, stock=50)
    buyer = await customer(client, app)

    response = await place_order(
        client,
        buyer.headers,
        [
            {"product_id": plenty["id"], "quantity": 5},
            {"product_id": scarce["id"], "quantity": 2},
            {"product_id": empty["id"], "quantity": 1},
        ],
    )

    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_stock"
    assert sorted(error["details"], key=lambda d: d["product_id"]) == sorted(
        [
            {"product_id": scarce["id"], "requested": 2},
            {"product_id": empty["id"], "requested": 1},
        ],
        key=lambda d: d["product_id"],
    )
    # All or nothing: the line that could be served was not taken either.
    assert await product_stock(app, plenty["id"]) == 50
    assert await product_stock(app, scarce["id"]) == 1
    assert await order_count(app) == 0
    assert await mail_jobs(app, buyer.id) == []

    exact = await place_order(client, buyer.headers, [{"product_id": scarce["id"], "quantity": 1}])
    assert exact.status_code == 201
    assert await product_stock(app, scarce["id"]) == 0


async def test_mixed_currencies_are_refused(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    usd = await create_product(client, admin.headers, currency="USD")
    eur = await create_product(client, admin.headers, currency="EUR")
    buyer = await customer(client, app)
    response = await place_order(
        client,
        buyer.headers,
        [{"product_id": usd["id"], "quantity": 1}, {"product_id": eur["id"], "quantity": 1}],
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "mixed_currency"
    assert await product_stock(app, usd["id"]) == 10


async def test_only_verified_customers_order(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    line = [{"product_id": product["id"], "quantity": 1}]
    anonymous = await client.post(ORDERS, json={"items": line}, headers={"Idempotency-Key": "anon"})
    assert anonymous.status_code == 401
    unverified = await customer(client, app, verified=False)
    refused = await place_order(client, unverified.headers, line)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "email_not_verified"
    assert await product_stock(app, product["id"]) == 10


async def test_status_transitions_are_enforced(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    buyer = await customer(client, app)

    async def new_order() -> str:
        response = await place_order(
            client, buyer.headers, [{"product_id": product["id"], "quantity": 2}]
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    shipped = await new_order()
    assert (await change_status(client, buyer.headers, shipped, "paid")).status_code == 403
    refused = await change_status(client, admin.headers, shipped, "shipped")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "invalid_transition"
    assert refused.json()["error"]["details"] == {
        "from": "pending",
        "to": "shipped",
        "allowed": ["cancelled", "paid"],
    }
    paid = await change_status(client, admin.headers, shipped, "paid")
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")
    assert (await change_status(client, admin.headers, shipped, "pending")).status_code == 409
    assert (await change_status(client, admin.headers, shipped, "paid")).status_code == 409
    done = await change_status(client, admin.headers, shipped, "shipped")
    assert done.json()["status"] == "shipped"
    for target in ("pending", "paid", "cancelled"):
        assert (await change_status(client, admin.headers, shipped, target)).status_code == 409
    assert await product_stock(app, product["id"]) == 8  # shipping returns nothing

    cancelled_pending = await new_order()
    assert await product_stock(app, product["id"]) == 6
    cancelled = await change_status(client, admin.headers, cancelled_pending, "cancelled")
    assert cancelled.json()["status"] == "cancelled"
    assert await product_stock(app, product["id"]) == 8  # restocked
    again = await change_status(client, admin.headers, cancelled_pending, "cancelled")
    assert again.status_code == 409
    assert await product_stock(app, product["id"]) == 8  # restocked once only
    assert (
        await change_status(client, admin.headers, cancelled_pending, "paid")
    ).status_code == 409

    cancelled_paid = await new_order()
    await change_status(client, admin.headers, cancelled_paid, "paid")
    assert await product_stock(app, product["id"]) == 6
    await change_status(client, admin.headers, cancelled_paid, "cancelled")
    assert await product_stock(app, product["id"]) == 8
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["stock"] == 8

    bad = await change_status(client, admin.headers, cancelled_paid, "refunded")
    assert bad.status_code == 422
    missing = await change_status(client, admin.headers, str(uuid.uuid4()), "paid")
    assert missing.status_code == 404
    malformed = await change_status(client, admin.headers, "not-a-uuid", "paid")
    assert malformed.status_code == 422


async def test_cancelling_restores_stock_of_an_archived_product(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=4)
    buyer = await customer(client, app)
    order = await place_order(client, buyer.headers, [{"product_id": product["id"], "quantity": 3}])
    await client.post(f"/api/v1/products/{product['id']}/archive", headers=admin.headers)
    cancelled = await change_status(client, admin.headers, order.json()["id"], "cancelled")
    assert cancelled.status_code == 200
    assert await product_stock(app, product["id"]) == 4
    # The order still shows its line for the archived product.
    readback = await client.get(f"{ORDERS}/{order.json()['id']}", headers=buyer.headers)
    assert readback.json()["lines"][0]["product_id"] == product["id"]


async def test_concurrent_cancels_restock_once(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    buyer = await customer(client, app)
    order = await place_order(client, buyer.headers, [{"product_id": product["id"], "quantity": 4}])
    assert await product_stock(app, product["id"]) == 6

    responses = await asyncio.gather(
        *(change_status(client, admin.headers, order.json()["id"], "cancelled") for _ in range(5))
    )

    assert sorted(r.status_code for r in responses) == [200, 409, 409, 409, 409]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {
        "invalid_transition"
    }
    assert await product_stock(app, product["id"]) == 10
