"""Products: staff writes, cached public reads with ETags, If-Match, archive, search."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from slipway.identity.models import Role
from tests.identity.conftest import login_ok, new_account, register, set_role

PRODUCTS = "/api/v1/products"


async def staff_headers(client: httpx.AsyncClient, app: FastAPI) -> dict[str, str]:
    email = "staff@example.com"
    await register(client, email)
    await set_role(app, email, Role.STAFF)
    return (await login_ok(client, email)).headers


async def test_product_lifecycle(client: httpx.AsyncClient, app: FastAPI, backend: str) -> None:
    staff = await staff_headers(client, app)
    created = await client.post(
        PRODUCTS,
        json={
            "sku": " kt-001 ",
            "name": "Steel kettle",
            "description": "Boils water fast",
            "price_minor": 2599,
            "currency": "usd",
            "stock": 5,
        },
        headers=staff,
    )
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["sku"] == "KT-001"
    assert product["currency"] == "USD"
    url = f"{PRODUCTS}/{product['id']}"
    assert created.headers["location"].endswith(url)

    first = await client.get(url)
    second = await client.get(url)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    etag = first.headers["etag"]
    not_modified = await client.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304

    missing_if_match = await client.patch(url, json={"name": "Kettle"}, headers=staff)
    assert missing_if_match.status_code == 428
    updated = await client.patch(url, json={"name": "Kettle"}, headers={**staff, "If-Match": etag})
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    stale = await client.patch(url, json={"name": "Old"}, headers={**staff, "If-Match": etag})
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "stale_version"

    fresh = await client.get(url)
    assert fresh.json()["name"] == "Kettle"
    assert fresh.headers["etag"] != etag

    found = await client.get(PRODUCTS, params={"q": "kettle"})
    assert found.status_code == 200, found.text
    assert [p["id"] for p in found.json()["items"]] == [product["id"]]

    customer = await new_account(client)
    forbidden = await client.post(f"{url}/archive", headers=customer.headers)
    assert forbidden.status_code == 403
    archived = await client.post(f"{url}/archive", headers=staff)
    assert archived.json()["status"] == "archived"
    listing = await client.get(PRODUCTS)
    assert listing.json()["items"] == []
