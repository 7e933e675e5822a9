"""Idempotency-Key on POST /api/v1/orders: replays of the stored response, 422 on reuse
with another body, per-user scope, 24 h expiry with the periodic purge, and ten concurrent
requests with one key creating exactly one order."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from slipway.orders.models import IdempotencyRecord, Order
from slipway.platform.db.base import utcnow
from slipway.platform.jobs.purge import PURGERS, run_purges
from tests.factories import (
    ORDERS,
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


async def orders_of(app: FastAPI, user_id: uuid.UUID) -> int:
    async with session_factory(app)() as session:
        count = await session.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == user_id)
        )
    return int(count or 0)


async def key_record(app: FastAPI, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
    async with session_factory(app)() as session:
        record: IdempotencyRecord | None = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
            )
        )
        return record


async def test_same_key_same_body_replays_the_stored_response(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    buyer = await customer(client, app)
    items = [{"product_id": product["id"], "quantity": 2}]

    first = await place_order(client, buyer.headers, items, key="order-1")
    # A retry: same key, same body (key order, whitespace and ignored fields do not matter).
    retry = await client.post(
        ORDERS,
        content=b'{ "items": [ {"quantity": 2, "product_id": %d, "price": 1} ] }' % product["id"],
        headers={**buyer.headers, "Idempotency-Key": "order-1", "Content-Type": "application/json"},
    )

    assert first.status_code == retry.status_code == 201
    assert retry.content == first.content
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["location"] == first.headers["location"]
    assert await orders_of(app, buyer.id) == 1
    assert await product_stock(app, product["id"]) == 8  # taken once

    # Even after the order moved on, a replay returns the original response.
    await client.post(f"{ORDERS}/{first.json()['id']}/status", json={"status": "paid"},
                      headers=admin.headers)  # fmt: skip
    late = await place_order(client, buyer.headers, items, key="order-1")
    assert late.content == first.content


async def test_same_key_other_body_is_422(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    buyer = await customer(client, app)
    await place_order(
        client, buyer.headers, [{"product_id": product["id"], "quantity": 1}], key="k"
    )

    reused = await place_order(
        client, buyer.headers, [{"product_id": product["id"], "quantity": 3}], key="k"
    )

    assert reused.status_code == 422
    error = reused.json()["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "different request body" in error["message"]
    assert await orders_of(app, buyer.id) == 1
    assert await product_stock(app, product["id"]) == 9


async def test_keys_are_scoped_per_user(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    alice, bob = await customer(client, app), await customer(client, app)
    items = [{"product_id": product["id"], "quantity": 1}]

    for_alice = await place_order(client, alice.headers, items, key="shared-key")
    for_bob = await place_order(client, bob.headers, items, key="shared-key")

    assert for_alice.status_code == for_bob.status_code == 201
    assert for_alice.json()["id"] != for_bob.json()["id"]
    assert for_bob.json()["user_id"] == str(bob.id)
    assert "idempotent-replayed" not in for_bob.headers
    # A different body under the same key is fine for another user, too.
    other = await place_order(
        client, alice.headers, [{"product_id": product["id"], "quantity": 2}], key="bob-only"
    )
    assert other.status_code == 201
    assert await product_stock(app, product["id"]) == 6


async def test_failed_requests_do_not_burn_the_key(client: httpx.AsyncClient, app: FastAPI) -> None:
    """Only a created order is stored: after a 409 the client may fix stock and retry."""
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=1)
    buyer = await customer(client, app)
    items = [{"product_id": product["id"], "quantity": 3}]
    refused = await place_order(client, buyer.headers, items, key="retry-me")
    assert refused.status_code == 409
    assert await key_record(app, buyer.id, "retry-me") is None

    await client.post(f"/api/v1/products/{product['id']}/restock", json={"quantity": 5},
                      headers=admin.headers)  # fmt: skip
    accepted = await place_order(client, buyer.headers, items, key="retry-me")
    assert accepted.status_code == 201
    assert "idempotent-replayed" not in accepted.headers


async def test_keys_expire_after_24_hours_and_are_purged(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=10)
    buyer = await customer(client, app)
    items = [{"product_id": product["id"], "quantity": 1}]
    before = utcnow()
    first = await place_order(client, buyer.headers, items, key="daily")
    record = await key_record(app, buyer.id, "daily")
    assert record is not None
    assert record.status_code == 201
    lifetime = record.expires_at.replace(tzinfo=before.tzinfo) - before
    assert timedelta(hours=24) <= lifetime < timedelta(hours=24, minutes=1)

    # The purge is registered with the platform's periodic purge (beat / embedded timer).
    assert "idempotency_keys" in PURGERS
    assert (await run_purges(app.state.services))["idempotency_keys"] == 0
    assert await key_record(app, buyer.id, "daily") is not None

    await expire_keys(app)
    # Expired but not yet purged: the key is free again, a new body is not a reuse.
    renewed = await place_order(
        client, buyer.headers, [{"product_id": product["id"], "quantity": 2}], key="daily"
    )
    assert renewed.status_code == 201, renewed.text
    assert renewed.json()["id"] != first.json()["id"]

    await expire_keys(app)
    deleted = await run_purges(app.state.services)
    assert deleted["idempotency_keys"] == 1
    assert await key_record(app, buyer.id, "daily") is None


async def expire_keys(app: FastAPI) -> None:
    """Move every key past its expiry, as 25 hours of waiting would."""
    async with session_factory(app)() as session, session.begin():
        await session.execute(
            update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(hours=1))
        )


async def test_ten_concurrent_requests_with_one_key_create_one_order(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=100)
    buyer = await customer(client, app)
    items = [{"product_id": product["id"], "quantity": 3}]

    for round_number in range(3):  # a few rounds: the race must never go the wrong way
        key = f"double-click-{round_number}"
        responses = await asyncio.gather(
            *(place_order(client, buyer.headers, items, key=key) for _ in range(10))
        )
        assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert len({r.content for r in responses}) == 1
        assert sum("idempotent-replayed" in r.headers for r in responses) == 9

    assert await orders_of(app, buyer.id) == 3
    assert await product_stock(app, product["id"]) == 100 - 3 * 3
