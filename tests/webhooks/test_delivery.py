"""Order events reach registered receivers as signed background deliveries: retried with
backoff by the job runtime, recorded per attempt, bounded in time and size, no redirects.
Receivers are real HTTP servers on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from standardwebhooks.webhooks import Webhook

from slipway.webhooks.delivery import DeliveryFailedError
from tests.factories import Person, change_status, create_product, customer, place_order
from tests.webhooks.conftest import WEBHOOKS, Received, Receiver, register_ok
from tests.webhooks.test_ssrf import deliver_once
from tests.webhooks.waiting import wait_for


def verify_as_documented(secret: str, received: Received, tolerance: int = 300) -> dict[str, Any]:
    """The receiver recipe of docs/webhooks.md, line for line: stdlib only."""
    message_id = received.headers["webhook-id"]
    timestamp = received.headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        raise ValueError("stale timestamp")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + received.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = received.headers["webhook-signature"].split()
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise ValueError("bad signature")
    payload: dict[str, Any] = json.loads(received.body)
    return payload


async def deliveries(
    client: httpx.AsyncClient, admin: Person, endpoint_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"{WEBHOOKS}/{endpoint_id}/deliveries", headers=admin.headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows[::-1]  # oldest first


async def order_placed(client: httpx.AsyncClient, app: FastAPI, admin: Person) -> dict[str, Any]:
    product = await create_product(client, admin.headers, price_minor=1250, stock=5)
    buyer = await customer(client, app)
    response = await place_order(
        client, buyer.headers, [{"product_id": product["id"], "quantity": 2}]
    )
    assert response.status_code == 201, response.text
    order: dict[str, Any] = response.json()
    return order


async def test_order_events_are_delivered_signed_end_to_end(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url("/orders"))
    order = await order_placed(client, app, admin)

    async def arrived(count: int) -> bool:
        return receiver.count() >= count

    await wait_for(lambda: arrived(1), timeout=15)
    created = receiver.requests[0]
    assert created.path == "/orders"
    assert created.headers["content-type"] == "application/json"
    assert created.headers["webhook-id"].startswith("msg_")
    # Both the documented stdlib recipe and the Standard Webhooks reference library verify.
    payload = verify_as_documented(endpoint["secret"], created)
    assert Webhook(endpoint["secret"]).verify(created.body, created.headers) == payload
    assert payload["type"] == "order.created"
    assert payload["data"] == {
        "order_id": order["id"],
        "status": "pending",
        "total_minor": 2500,
        "currency": "USD",
    }

    assert (await change_status(client, admin.headers, order["id"], "paid")).status_code == 200
    await wait_for(lambda: arrived(2), timeout=15)
    changed = verify_as_documented(endpoint["secret"], receiver.requests[1])
    assert (changed["type"], changed["data"]["status"]) == ("order.status_changed", "paid")

    rows = await deliveries(client, admin, endpoint["id"])
    assert [(r["event_type"], r["status"], r["status_code"], r["attempt"]) for r in rows] == [
        ("order.created", "succeeded", 204, 1),
        ("order.status_changed", "succeeded", 204, 1),
    ]
    assert all(r["duration_ms"] is not None and r["error"] is None for r in rows)


async def test_a_tampered_body_or_foreign_secret_does_not_verify(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url())
    await deliver_once(app, uuid.UUID(endpoint["id"]))
    received = receiver.requests[0]
    verify_as_documented(endpoint["secret"], received)

    tampered = Received(received.path, received.headers, received.body + b" ")
    with pytest.raises(ValueError, match="bad signature"):
        verify_as_documented(endpoint["secret"], tampered)
    other = await register_ok(client, admin.headers, receiver.url("/other"))
    with pytest.raises(ValueError, match="bad signature"):
        verify_as_documented(other["secret"], received)
    with pytest.raises(ValueError, match="stale"):
        verify_as_documented(endpoint["secret"], received, tolerance=-1)


async def test_only_subscribed_active_endpoints_receive_an_event(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    await register_ok(client, admin.headers, receiver.url("/created"), ["order.created"])
    await register_ok(client, admin.headers, receiver.url("/status"), ["order.status_changed"])
    paused = await register_ok(client, admin.headers, receiver.url("/paused"))
    await client.patch(
        f"{WEBHOOKS}/{paused['id']}", json={"is_active": False}, headers=admin.headers
    )

    await order_placed(client, app, admin)

    async def arrived() -> bool:
        return receiver.count() >= 1

    await wait_for(arrived, timeout=15)
    # Give a wrongly queued delivery the time to show up.
    await wait_for(_sleeping(0.5), timeout=2)
    assert [r.path for r in receiver.requests] == ["/created"]


def _sleeping(seconds: float) -> Any:
    started = time.monotonic()

    async def done() -> bool:
        return time.monotonic() - started >= seconds

    return done


async def test_failed_deliveries_are_retried_by_the_job_runtime_and_recorded_per_attempt(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url(), ["order.created"])
    receiver.plan = [500, 503]  # then the default 204

    await order_placed(client, app, admin)

    async def third_attempt_recorded() -> bool:
        return len(await deliveries(client, admin, endpoint["id"])) >= 3

    await wait_for(third_attempt_recorded, timeout=20)
    rows = await deliveries(client, admin, endpoint["id"])
    assert [(r["attempt"], r["status"], r["status_code"]) for r in rows] == [
        (1, "failed", 500),
        (2, "failed", 503),
        (3, "succeeded", 204),
    ]
    assert rows[0]["error"] == "the receiver answered HTTP 500"
    assert len({r["job_id"] for r in rows}) == 1
    # One message, three attempts: the same webhook-id (receivers deduplicate on it), each
    # attempt signed afresh.
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    for request in receiver.requests:
        verify_as_documented(endpoint["secret"], request)


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url("/start"))
    receiver.fail_with(307)
    receiver.headers = {"Location": receiver.url("/elsewhere")}

    with pytest.raises(DeliveryFailedError, match="HTTP 307"):
        await deliver_once(app, uuid.UUID(endpoint["id"]))
    assert [r.path for r in receiver.requests] == ["/start"]


@pytest.mark.parametrize(
    "settings_overrides", [{"webhook_max_response_bytes": 4096}], indirect=True
)
async def test_the_response_body_read_is_bounded(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url())
    receiver.fail_with(200)
    receiver.body = b"x" * 5_000_000

    result = await deliver_once(app, uuid.UUID(endpoint["id"]))

    assert result["status_code"] == 200
    rows = await deliveries(client, admin, endpoint["id"])
    assert rows[0]["status"] == "succeeded"
    assert rows[0]["response_excerpt"] == "x" * 1000


async def test_a_slow_receiver_times_out(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver, settings: Any
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url())
    receiver.delay = settings.webhook_timeout_seconds + 1.5

    started = time.monotonic()
    with pytest.raises(DeliveryFailedError, match=r"timed out|ReadTimeout"):
        await deliver_once(app, uuid.UUID(endpoint["id"]))
    assert time.monotonic() - started < settings.webhook_timeout_seconds + 1
    rows = await deliveries(client, admin, endpoint["id"])
    assert rows[0]["status"] == "failed"
    assert rows[0]["status_code"] is None
