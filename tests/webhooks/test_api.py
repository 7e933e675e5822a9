"""/api/v1/webhooks: staff-only management, the secret shown once, the SSRF guard at
registration and on change. SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from slipway.webhooks.models import WebhookEndpoint
from tests.factories import Person, customer, session_factory
from tests.webhooks.conftest import WEBHOOKS, Receiver, register, register_ok


async def test_staff_register_and_read_endpoints_and_the_secret_is_shown_once(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    created = await register_ok(client, admin.headers, receiver.url(), ["order.created"])

    assert created["secret"].startswith("whsec_")
    assert created["url"] == receiver.url()
    assert created["event_types"] == ["order.created"]
    assert created["circuit_state"] == "closed"

    fetched = (await client.get(f"{WEBHOOKS}/{created['id']}", headers=admin.headers)).json()
    listed = (await client.get(WEBHOOKS, headers=admin.headers)).json()
    assert "secret" not in fetched
    assert [item["id"] for item in listed] == [created["id"]]
    assert "secret" not in listed[0]
    # Stored encrypted: the database never holds the secret in clear.
    async with session_factory(app)() as session:
        stored = await session.scalar(select(WebhookEndpoint.secret_ciphertext))
    assert stored is not None
    assert created["secret"] not in stored
    assert created["secret"].removeprefix("whsec_") not in stored


async def test_rotation_returns_a_new_secret_once(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver
) -> None:
    created = await register_ok(client, admin.headers, receiver.url())
    rotated = await client.post(f"{WEBHOOKS}/{created['id']}/rotate-secret", headers=admin.headers)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]


async def test_update_and_delete(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver
) -> None:
    created = await register_ok(client, admin.headers, receiver.url())
    path = f"{WEBHOOKS}/{created['id']}"

    changed = await client.patch(
        path,
        json={"event_types": ["order.status_changed"], "is_active": False, "description": "erp"},
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["event_types"], changed.json()["is_active"]) == (
        ["order.status_changed"],
        False,
    )
    assert changed.json()["description"] == "erp"

    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    missing = await client.get(path, headers=admin.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "webhook_not_found"


async def test_customers_and_anonymous_callers_are_refused(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    buyer = await customer(client, app)
    created = await register_ok(client, admin.headers, receiver.url())
    body = {"url": receiver.url(), "event_types": ["order.created"]}

    assert (await client.post(WEBHOOKS, json=body)).status_code == 401
    for method, path, payload in [
        ("POST", WEBHOOKS, body),
        ("GET", WEBHOOKS, None),
        ("GET", f"{WEBHOOKS}/{created['id']}", None),
        ("DELETE", f"{WEBHOOKS}/{created['id']}", None),
        ("GET", f"{WEBHOOKS}/{created['id']}/deliveries", None),
    ]:
        response = await client.request(method, path, json=payload, headers=buyer.headers)
        assert response.status_code == 403, (method, path, response.text)


@pytest.mark.parametrize(
    "body",
    [
        {"url": "https://hooks.example.com/x", "event_types": []},
        {"url": "https://hooks.example.com/x", "event_types": ["user.deleted"]},
        {"url": "https://hooks.example.com/x", "event_types": ["order.created"], "x": 1},
        {"url": "not a url at all", "event_types": ["order.created"]},
    ],
)
async def test_invalid_bodies_are_422(
    client: httpx.AsyncClient, admin: Person, body: dict[str, Any]
) -> None:
    response = await client.post(WEBHOOKS, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text


async def test_a_changed_url_is_checked_again(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver
) -> None:
    created = await register_ok(client, admin.headers, receiver.url())
    response = await client.patch(
        f"{WEBHOOKS}/{created['id']}",
        json={"url": "http://169.254.169.254/latest/meta-data/"},
        headers=admin.headers,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "webhook_url_blocked"
    assert "metadata" in error["details"][0]["message"]
    unchanged = await client.get(f"{WEBHOOKS}/{created['id']}", headers=admin.headers)
    assert unchanged.json()["url"] == receiver.url()


async def test_unknown_endpoint_is_404(client: httpx.AsyncClient, admin: Person) -> None:
    response = await client.get(f"{WEBHOOKS}/{uuid.uuid4()}/deliveries", headers=admin.headers)
    assert response.status_code == 404


@pytest.mark.parametrize("settings_overrides", [{"webhook_max_endpoints": 2}], indirect=True)
async def test_registration_is_bounded(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver
) -> None:
    await register_ok(client, admin.headers, receiver.url("/a"))
    await register_ok(client, admin.headers, receiver.url("/b"))
    third = await register(client, admin.headers, receiver.url("/c"))
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "too_many_webhooks"
