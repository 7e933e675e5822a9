"""OWASP API1:2023 Broken Object Level Authorization.

Every object a user reaches by id is checked against that user: another customer's order,
account or job answers exactly like a missing one (404, nothing disclosed), staff see what
their role allows, and the ids themselves are random UUIDs, not counters to walk.
"""

from __future__ import annotations

import itertools
import uuid

import httpx
from fastapi import FastAPI

from tests.owasp.conftest import create_product, new_customer, new_staff, place_order


async def test_another_customers_order_is_indistinguishable_from_a_missing_one(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    alice = await new_customer(client, app)
    mallory = await new_customer(client, app)
    created = await place_order(client, alice, product["id"])
    assert created.status_code == 201, created.text
    order_id = created.json()["id"]

    stolen = await client.get(f"/api/v1/orders/{order_id}", headers=mallory.headers)
    missing = await client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=mallory.headers)
    own = await client.get(f"/api/v1/orders/{order_id}", headers=alice.headers)
    by_staff = await client.get(f"/api/v1/orders/{order_id}", headers=staff.headers)

    assert stolen.status_code == missing.status_code == 404
    assert stolen.json()["error"]["code"] == missing.json()["error"]["code"]
    assert stolen.json()["error"]["message"] == missing.json()["error"]["message"]
    assert own.status_code == 200
    assert by_staff.status_code == 200


async def test_a_customer_cannot_change_someone_elses_order(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    alice = await new_customer(client, app)
    mallory = await new_customer(client, app)
    order_id = (await place_order(client, alice, product["id"])).json()["id"]

    cancel = await client.post(
        f"/api/v1/orders/{order_id}/status", json={"status": "cancelled"}, headers=mallory.headers
    )
    after = await client.get(f"/api/v1/orders/{order_id}", headers=alice.headers)

    assert cancel.status_code in (403, 404)
    assert after.json()["status"] == "pending"


async def test_order_lists_only_ever_show_the_callers_orders(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    alice = await new_customer(client, app)
    mallory = await new_customer(client, app)
    alice_order = (await place_order(client, alice, product["id"])).json()
    await place_order(client, mallory, product["id"])

    mine = await client.get("/api/v1/orders", headers=mallory.headers)
    by_user = await client.get(
        "/api/v1/orders", params={"user_id": alice_order["user_id"]}, headers=mallory.headers
    )
    everyone = await client.get(
        "/api/v1/orders", params={"all_users": "true"}, headers=mallory.headers
    )
    staff_view = await client.get(
        "/api/v1/orders", params={"user_id": alice_order["user_id"]}, headers=staff.headers
    )

    assert mine.status_code == 200
    assert {o["user_id"] for o in mine.json()["items"]} == {
        (await client.get("/api/v1/users/me", headers=mallory.headers)).json()["id"]
    }
    assert alice_order["id"] not in {o["id"] for o in mine.json()["items"]}
    assert by_user.status_code == everyone.status_code == 403
    assert [o["id"] for o in staff_view.json()["items"]] == [alice_order["id"]]


async def test_another_users_account_is_not_found(client: httpx.AsyncClient, app: FastAPI) -> None:
    alice = await new_customer(client, app)
    mallory = await new_customer(client, app)
    alice_id = (await client.get("/api/v1/users/me", headers=alice.headers)).json()["id"]

    stolen = await client.get(f"/api/v1/users/{alice_id}", headers=mallory.headers)
    own = await client.get(f"/api/v1/users/{alice_id}", headers=alice.headers)

    assert stolen.status_code == 404
    assert own.status_code == 200


async def test_someone_elses_job_is_not_found(client: httpx.AsyncClient, app: FastAPI) -> None:
    staff = await new_staff(client, app)
    customer = await new_customer(client, app)
    report = await client.post(
        "/api/v1/reports/sales",
        json={"start": "2026-01-01", "end": "2026-01-31"},
        headers=staff.headers,
    )
    assert report.status_code == 202, report.text
    # The report is a staff object; its id means nothing to a customer.
    status_url = report.headers["location"]

    as_customer = await client.get(status_url, headers=customer.headers)
    as_staff = await client.get(status_url, headers=staff.headers)

    assert as_customer.status_code in (403, 404)
    assert as_staff.status_code == 200


async def test_object_ids_are_random_not_sequential(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    staff = await new_staff(client, app)
    product = await create_product(client, staff)
    alice = await new_customer(client, app)
    ids = [(await place_order(client, alice, product["id"])).json()["id"] for _ in range(3)]
    user_id = (await client.get("/api/v1/users/me", headers=alice.headers)).json()["id"]

    parsed = [uuid.UUID(value) for value in [*ids, user_id]]
    assert all(u.version in (4, 7) for u in parsed), parsed
    # No two consecutive orders differ by one: nothing to enumerate.
    numbers = [u.int for u in parsed[:3]]
    assert all(abs(a - b) > 1 for a, b in itertools.pairwise(numbers))
