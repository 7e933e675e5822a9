"""Products: staff-only writes, normalisation and validation, the cached read with its
ETag, If-Match optimistic concurrency, archive (soft delete) and restock. SQLite and
PostgreSQL (the `backend` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from slipway.platform.services import Services
from tests.factories import PRODUCTS, create_product, customer, place_order, product_body, staff


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False}


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def test_create_normalises_sku_and_currency(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    created = await client.post(
        PRODUCTS,
        json=product_body(sku="  kt-001 ", currency="eur", name="  Steel kettle  "),
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["sku"], body["currency"], body["name"]) == ("KT-001", "EUR", "Steel kettle")
    assert (body["status"], body["version"], body["stock"]) == ("active", 1, 10)
    assert created.headers["location"].endswith(f"{PRODUCTS}/{body['id']}")

    # The same SKU in another case or with spaces is the same SKU.
    duplicate = await client.post(PRODUCTS, json=product_body(sku="KT-001 "), headers=admin.headers)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "duplicate_sku"


INVALID_CREATE_FIELDS: list[tuple[str, object]] = [
    ("sku", "x" * 65),
    ("sku", "bad sku with spaces"),
    ("sku", ""),
    ("name", "n" * 201),
    ("name", "   "),
    ("description", "d" * 5001),
    ("price_minor", -1),
    ("price_minor", 10**11 + 1),
    ("price_minor", 12.5),
    ("currency", "EURO"),
    ("stock", -1),
    ("stock", 10_000_001),
    ("status", "archived"),  # not settable on create: extra fields are refused
]


async def test_create_rejects_invalid_fields(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    for field, value in INVALID_CREATE_FIELDS:
        response = await client.post(
            PRODUCTS, json=product_body(**{field: value}), headers=admin.headers
        )
        assert response.status_code == 422, (field, value, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [f"body.{field}"], (field, error)
    assert (await client.get(PRODUCTS)).json()["items"] == []


async def test_writes_are_staff_only(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    url = f"{PRODUCTS}/{product['id']}"
    buyer = await customer(client, app)
    attempts = [
        ("POST", PRODUCTS, product_body()),
        ("PATCH", url, {"name": "Hacked"}),
        ("POST", f"{url}/archive", None),
        ("POST", f"{url}/restock", {"quantity": 5}),
    ]
    for method, path, body in attempts:
        anonymous = await client.request(method, path, json=body, headers={"If-Match": "*"})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        as_customer = await client.request(
            method, path, json=body, headers={**buyer.headers, "If-Match": "*"}
        )
        assert as_customer.status_code == 403, (method, path, as_customer.text)
    unchanged = (await client.get(url)).json()
    assert (unchanged["name"], unchanged["stock"], unchanged["status"]) == (
        product["name"],
        product["stock"],
        "active",
    )


async def test_second_read_is_served_from_the_cache(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    url = f"{PRODUCTS}/{product['id']}"
    cache = services_of(app).cache
    before = cache.stats()

    first = await client.get(url)
    second = await client.get(url)

    after = cache.stats()
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert second.content == first.content
    assert after["hits"] - before["hits"] == 1
    assert after["misses"] - before["misses"] == 1
    assert first.json() == product
    assert first.headers["etag"] == second.headers["etag"]
    assert "public" in first.headers["cache-control"]

    revalidated = await client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert revalidated.status_code == 304
    assert revalidated.content == b""


async def test_unknown_and_out_of_range_ids(client: httpx.AsyncClient) -> None:
    missing = await client.get(f"{PRODUCTS}/987654")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "product_not_found"
    huge = await client.get(f"{PRODUCTS}/{2**63}")
    assert huge.status_code == 422
    assert (await client.get(f"{PRODUCTS}/abc")).status_code == 422
    assert (await client.get(f"{PRODUCTS}/0")).status_code == 422


async def test_patch_requires_a_current_if_match(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, name="Kettle", price_minor=1000)
    url = f"{PRODUCTS}/{product['id']}"
    etag = (await client.get(url)).headers["etag"]

    missing = await client.patch(url, json={"name": "New"}, headers=admin.headers)
    assert missing.status_code == 428
    assert missing.json()["error"]["code"] == "if_match_required"
    for wrong_tag in ('"not-the-etag"', f"W/{etag}", etag.strip('"')):
        wrong = await client.patch(
            url, json={"name": "New"}, headers={**admin.headers, "If-Match": wrong_tag}
        )
        assert wrong.status_code == 412, wrong_tag  # a weak validator never matches

    updated = await client.patch(
        url, json={"name": "Better kettle", "price_minor": 1200},
        headers={**admin.headers, "If-Match": etag},
    )  # fmt: skip
    assert updated.status_code == 200, updated.text
    assert (updated.json()["name"], updated.json()["price_minor"]) == ("Better kettle", 1200)
    assert updated.json()["version"] == product["version"] + 1

    # The cache was invalidated: the next read is a miss with the new version and ETag.
    fresh = await client.get(url)
    assert fresh.headers["x-cache"] == "miss"
    assert fresh.json() == updated.json()
    assert fresh.headers["etag"] != etag

    stale = await client.patch(
        url, json={"name": "Lost update"}, headers={**admin.headers, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "stale_version"
    assert (await client.get(url)).json()["name"] == "Better kettle"

    # The new ETag works, also in a list; "*" means "whatever is current".
    listed = f'"other", {fresh.headers["etag"]}'
    again = await client.patch(
        url, json={"description": ""}, headers={**admin.headers, "If-Match": listed}
    )
    assert again.status_code == 200, again.text
    anything = await client.patch(
        url, json={"description": "any"}, headers={**admin.headers, "If-Match": "*"}
    )
    assert anything.status_code == 200, anything.text


INVALID_PATCHES: list[dict[str, Any]] = [
    {"name": None},
    {"price_minor": None},
    {"currency": None},
    {"name": "x" * 201},
    {"description": "d" * 5001},
    {"price_minor": -5},
    {"stock": 99},  # stock moves through restock and orders only
    {"sku": "OTHER"},
    {"version": 7},
]


async def test_patch_rejects_invalid_bodies(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    url = f"{PRODUCTS}/{product['id']}"
    etag = (await client.get(url)).headers["etag"]
    for body in INVALID_PATCHES:
        response = await client.patch(url, json=body, headers={**admin.headers, "If-Match": etag})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == "validation_error"
    assert (await client.get(url)).json() == product


async def test_concurrent_patches_with_one_etag_apply_once(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Two editors read the same version; exactly one update may win, the other gets 412
    (no lost update, even when both requests are in flight at once)."""
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    url = f"{PRODUCTS}/{product['id']}"
    etag = (await client.get(url)).headers["etag"]

    responses = await asyncio.gather(
        *(
            client.patch(url, json={"name": f"Editor {n}"},
                         headers={**admin.headers, "If-Match": etag})
            for n in range(6)
        )
    )  # fmt: skip

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 412, 412, 412, 412, 412], [r.text for r in responses]
    winner = next(r for r in responses if r.status_code == 200).json()
    current = (await client.get(url)).json()
    assert current["name"] == winner["name"]
    assert current["version"] == product["version"] + 1


async def test_archive_hides_from_lists_but_keeps_the_product(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    kept = await create_product(client, admin.headers, name="Kept lamp")
    gone = await create_product(client, admin.headers, name="Archived lamp")
    url = f"{PRODUCTS}/{gone['id']}"
    assert (await client.get(url)).headers["x-cache"] == "miss"

    archived = await client.post(f"{url}/archive", headers=admin.headers)
    assert archived.status_code == 200
    assert (archived.json()["status"], archived.json()["version"]) == ("archived", 2)
    # Archiving twice is harmless and changes nothing.
    again = await client.post(f"{url}/archive", headers=admin.headers)
    assert again.json() == archived.json()

    public = await client.get(PRODUCTS)
    assert [p["id"] for p in public.json()["items"]] == [kept["id"]]
    searched = await client.get(PRODUCTS, params={"q": "lamp"})
    assert [p["id"] for p in searched.json()["items"]] == [kept["id"]]

    # Still readable by id (orders reference it), and the cache shows the archived state.
    direct = await client.get(url)
    assert direct.status_code == 200
    assert direct.json()["status"] == "archived"

    assert (await client.get(PRODUCTS, params={"status": "archived"})).status_code == 403
    buyer = await customer(client, app)
    as_customer = await client.get(PRODUCTS, params={"status": "archived"}, headers=buyer.headers)
    assert as_customer.status_code == 403
    for_staff = await client.get(PRODUCTS, params={"status": "archived"}, headers=admin.headers)
    assert [p["id"] for p in for_staff.json()["items"]] == [gone["id"]]

    # An archived product cannot be bought.
    refused = await place_order(client, buyer.headers, [{"product_id": gone["id"], "quantity": 1}])
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "unknown_products"


async def test_restock_adds_stock_and_refreshes_the_cache(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers, stock=3)
    url = f"{PRODUCTS}/{product['id']}"
    await client.get(url)
    assert (await client.get(url)).headers["x-cache"] == "hit"

    restocked = await client.post(f"{url}/restock", json={"quantity": 7}, headers=admin.headers)
    assert restocked.status_code == 200, restocked.text
    assert (restocked.json()["stock"], restocked.json()["version"]) == (10, 2)
    fresh = await client.get(url)
    assert (fresh.headers["x-cache"], fresh.json()["stock"]) == ("miss", 10)

    for quantity in (0, -1, 1_000_001, "lots"):
        bad = await client.post(
            f"{url}/restock", json={"quantity": quantity}, headers=admin.headers
        )
        assert bad.status_code == 422, (quantity, bad.text)
    missing = await client.post(
        f"{PRODUCTS}/424242/restock", json={"quantity": 1}, headers=admin.headers
    )
    assert missing.status_code == 404


async def test_concurrent_archives_apply_once(client: httpx.AsyncClient, app: FastAPI) -> None:
    admin = await staff(client, app)
    product = await create_product(client, admin.headers)
    url = f"{PRODUCTS}/{product['id']}/archive"

    responses = await asyncio.gather(*(client.post(url, headers=admin.headers) for _ in range(5)))

    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"archived"}
    current = (await client.get(f"{PRODUCTS}/{product['id']}")).json()
    assert current["version"] == product["version"] + 1
