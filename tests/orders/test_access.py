"""Object-level authorisation on orders: owners only (404 for everyone else, never 403),
customers list their own orders, staff list everyone's with filters. Keyset pages."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from slipway.platform.pagination import cursor_codec
from tests.conftest import TEST_SECRET
from tests.factories import (
    ORDERS,
    Person,
    change_status,
    create_product,
    customer,
    place_order,
    staff,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False}


async def orders_for(
    client: httpx.AsyncClient, buyer: Person, product_id: int, n: int
) -> list[str]:
    ids = []
    for _ in range(n):
        response = await place_order(
            client, buyer.headers, [{"product_id": product_id, "quantity": 1}]
        )
        assert response.status_code == 201, response.text
        ids.append(str(response.json()["id"]))
    return ids


async def list_all(
    client: httpx.AsyncClient, headers: dict[str, str], **params: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(50):
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get(ORDERS, params=query, headers=headers)
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("too many pages")


async def test_other_customers_orders_are_404(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=20)
    alice, bob = await customer(client, app), await customer(client, app)
    (alices,) = await orders_for(client, alice, product["id"], 1)

    own = await client.get(f"{ORDERS}/{alices}", headers=alice.headers)
    assert own.status_code == 200
    as_bob = await client.get(f"{ORDERS}/{alices}", headers=bob.headers)
    no_such = await client.get(f"{ORDERS}/{uuid.uuid4()}", headers=bob.headers)
    # Indistinguishable from an order that does not exist: ids cannot be probed.
    assert as_bob.status_code == no_such.status_code == 404
    assert as_bob.json()["error"]["code"] == no_such.json()["error"]["code"] == "order_not_found"
    assert as_bob.json()["error"]["message"] == no_such.json()["error"]["message"]
    assert (await client.get(f"{ORDERS}/{alices}")).status_code == 401
    as_staff = await client.get(f"{ORDERS}/{alices}", headers=admin.headers)
    assert as_staff.json() == own.json()
    assert (await client.get(f"{ORDERS}/not-a-uuid", headers=alice.headers)).status_code == 422


async def test_customers_list_only_their_own_orders(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=50)
    alice, bob = await customer(client, app), await customer(client, app)
    alices = await orders_for(client, alice, product["id"], 5)
    bobs = await orders_for(client, bob, product["id"], 3)

    listed = await list_all(client, alice.headers)
    # Newest first, every order once, none of Bob's.
    assert [o["id"] for o in listed] == alices[::-1]
    assert {o["user_id"] for o in listed} == {str(alice.id)}
    assert [o["id"] for o in await list_all(client, bob.headers)] == bobs[::-1]

    for forbidden in ({"all_users": "true"}, {"user_id": str(bob.id)}):
        refused = await client.get(ORDERS, params=forbidden, headers=alice.headers)
        assert refused.status_code == 403, forbidden

    # A cursor is bound to its listing: Alice's cursor cannot page Bob's list or a filter.
    page = (await client.get(ORDERS, params={"limit": 2}, headers=alice.headers)).json()
    reused = await client.get(
        ORDERS, params={"limit": 2, "cursor": page["next_cursor"]}, headers=bob.headers
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "invalid_cursor"
    filtered = await client.get(
        ORDERS,
        params={"limit": 2, "status": "paid", "cursor": page["next_cursor"]},
        headers=alice.headers,
    )
    assert filtered.status_code == 422
    for bad in ("garbage", "A" * 40):
        response = await client.get(ORDERS, params={"cursor": bad}, headers=alice.headers)
        assert response.status_code == 422
    for params in ({"limit": 0}, {"limit": 101}, {"status": "lost"}, {"user_id": "me"}):
        assert (await client.get(ORDERS, params=params, headers=admin.headers)).status_code == 422
    assert (await client.get(ORDERS)).status_code == 401


async def test_staff_list_everyone_with_filters(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=50)
    alice, bob = await customer(client, app), await customer(client, app)
    alices = await orders_for(client, alice, product["id"], 3)
    bobs = await orders_for(client, bob, product["id"], 2)
    await change_status(client, admin.headers, alices[0], "paid")
    await change_status(client, admin.headers, bobs[1], "paid")
    await change_status(client, admin.headers, bobs[0], "cancelled")

    everyone = await list_all(client, admin.headers, all_users="true")
    assert [o["id"] for o in everyone] == (alices + bobs)[::-1]
    paid = await list_all(client, admin.headers, all_users="true", status="paid")
    assert [o["id"] for o in paid] == [bobs[1], alices[0]]
    of_bob = await list_all(client, admin.headers, user_id=str(bob.id))
    assert [o["id"] for o in of_bob] == bobs[::-1]
    bob_pending = await list_all(client, admin.headers, user_id=str(bob.id), status="pending")
    assert bob_pending == []
    # Without all_users, staff see their own orders (none), like any customer.
    assert await list_all(client, admin.headers) == []


async def test_signed_cursor_with_a_foreign_position_is_422(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Signed with our key but in another format (an older release): 422, never a 500."""
    alice = await customer(client, app)
    codec = cursor_codec(TEST_SECRET)
    context = f"orders:{alice.id}:None"
    for position in (["yesterday", str(uuid.uuid4())], ["2026-01-01T00:00:00", "x"], [1], [1, 2]):
        cursor = codec.encode(context, position)
        response = await client.get(ORDERS, params={"cursor": cursor}, headers=alice.headers)
        assert response.status_code == 422, (position, response.text)
        assert response.json()["error"]["code"] == "invalid_cursor"
    good = codec.encode(context, ["2026-01-01T00:00:00+00:00", str(uuid.uuid4())])
    assert (
        await client.get(ORDERS, params={"cursor": good}, headers=alice.headers)
    ).status_code == 200
