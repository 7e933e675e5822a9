"""GET /api/v1/products: keyset pagination (every sort, both orders, ties), filters, the
Link header, cursor and parameter validation, pagination under concurrent writes, and the
search rate limit. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from slipway.catalog.schemas import ProductQuery, ProductSort
from slipway.catalog.service import CatalogService
from slipway.platform.db.base import utcnow
from slipway.platform.pagination import cursor_codec
from tests.conftest import TEST_SECRET
from tests.factories import PRODUCTS, captured_statements, explain, insert_products, product_row

BASE = utcnow() - timedelta(days=30)
SORT_FIELD = {"created_at": "created_at", "price": "price_minor", "name": "name"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False}


async def walk(
    client: httpx.AsyncClient, params: dict[str, Any], *, max_pages: int = 100
) -> list[list[dict[str, Any]]]:
    """Follow next_cursor (checking the Link header agrees) until the last page."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        response = await client.get(
            PRODUCTS, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            assert "link" not in response.headers
            return pages
        link = response.headers["link"]
        assert link.endswith('>; rel="next"')
        next_url = urlsplit(link[1 : link.index(">")])
        assert parse_qs(next_url.query)["cursor"] == [cursor]
        assert next_url.path == PRODUCTS
    raise AssertionError("pagination did not end")


def expected_order(rows: list[dict[str, Any]], ids: list[int], sort: str, order: str) -> list[int]:
    field = SORT_FIELD[sort]
    pairs = sorted(((row[field], pid) for row, pid in zip(rows, ids, strict=True)))
    ordered = [pid for _, pid in pairs]
    return ordered if order == "asc" else ordered[::-1]


@pytest.fixture
async def catalogue(
    app: FastAPI, client: httpx.AsyncClient
) -> tuple[list[dict[str, Any]], list[int]]:
    """23 active products with deliberate ties on every sort key, plus archived ones."""
    rows = [
        product_row(
            i,
            # Ties: 3 share each timestamp, 4 share each price, names repeat every 5.
            created_at=BASE + timedelta(minutes=i // 3),
            price_minor=500 * (i // 4),
            name=f"Item {chr(ord('A') + i % 5)}",
        )
        for i in range(23)
    ]
    archived = [product_row(100 + i, status="archived", created_at=BASE) for i in range(3)]
    ids = await insert_products(app, rows + archived)
    return rows, ids[: len(rows)]


async def test_keyset_pages_cover_every_row_once_in_order(
    client: httpx.AsyncClient, catalogue: tuple[list[dict[str, Any]], list[int]]
) -> None:
    rows, ids = catalogue
    for sort in ("created_at", "price", "name"):
        for order in ("asc", "desc"):
            pages = await walk(client, {"limit": 5, "sort": sort, "order": order})
            assert [len(page) for page in pages] == [5, 5, 5, 5, 3], (sort, order)
            seen = [item["id"] for page in pages for item in page]
            # Stable tie-breaks on id: the order is total and matches the database's.
            assert seen == expected_order(rows, ids, sort, order), (sort, order)


async def test_filters_by_price_range_and_status(
    client: httpx.AsyncClient, catalogue: tuple[list[dict[str, Any]], list[int]]
) -> None:
    rows, _ids = catalogue
    pages = await walk(
        client, {"limit": 4, "sort": "price", "order": "asc", "min_price": 1000, "max_price": 2000}
    )
    prices = [item["price_minor"] for page in pages for item in page]
    expected = sorted(r["price_minor"] for r in rows if 1000 <= r["price_minor"] <= 2000)
    assert prices == expected
    assert len(prices) == 12
    assert all(item["status"] == "active" for page in pages for item in page)


INVALID_PARAMETERS: list[tuple[dict[str, Any], str]] = [
    ({"sort": "stock"}, "sort"),
    ({"sort": "id; drop table products"}, "sort"),
    ({"order": "sideways"}, "order"),
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"min_price": -1}, "min_price"),
    ({"max_price": 10**12}, "max_price"),
    ({"status": "deleted"}, "status"),
    ({"q": "x" * 201}, "q"),
    ({"q": ""}, "q"),
    ({"cursor": "c" * 1025}, "cursor"),
]


async def test_invalid_parameters_are_422(client: httpx.AsyncClient) -> None:
    for params, field in INVALID_PARAMETERS:
        response = await client.get(PRODUCTS, params=params)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [f"query.{field}"], params


async def test_malformed_and_foreign_cursors_are_422(
    client: httpx.AsyncClient, catalogue: tuple[list[dict[str, Any]], list[int]]
) -> None:
    first = (await client.get(PRODUCTS, params={"limit": 2, "sort": "price"})).json()
    cursor = first["next_cursor"]
    assert cursor

    def forged(payload: bytes) -> str:
        import base64

        return base64.urlsafe_b64encode(b"\0" * 12 + payload).rstrip(b"=").decode()

    bad_cursors = [
        "not base64 at all!",
        "a",
        "abc",
        # Tampered: same payload, one changed character.
        cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB"),
        # Forged: a position the server never signed.
        forged(orjson.dumps(["x", [1, 2]])),
    ]
    for bad in bad_cursors:
        response = await client.get(PRODUCTS, params={"limit": 2, "sort": "price", "cursor": bad})
        assert response.status_code == 422, (bad, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_cursor"
        assert error["details"][0]["field"] == "cursor"

    # A genuine cursor is bound to the query that made it: another sort, order or filter
    # would silently seek to the wrong place, so it is refused.
    for other in ({"sort": "name"}, {"sort": "price", "order": "asc"},
                  {"sort": "price", "min_price": 1}, {"sort": "price", "q": "item"}):  # fmt: skip
        response = await client.get(PRODUCTS, params={"limit": 2, **other, "cursor": cursor})
        assert response.status_code == 422, (other, response.text)
        assert response.json()["error"]["details"][0]["message"] == (
            "cursor belongs to another query"
        )
    # ... while a different page size is fine.
    ok = await client.get(PRODUCTS, params={"limit": 3, "sort": "price", "cursor": cursor})
    assert ok.status_code == 200


async def test_pagination_under_concurrent_writes_neither_skips_nor_repeats(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Newest first (the default), 5 new products land at the head of the list between
    every two page requests. An OFFSET-paged client would see each page shifted by 5
    (repeats); the keyset client sees exactly the rows that existed when it started."""
    original_rows = [product_row(i, created_at=BASE + timedelta(seconds=i)) for i in range(40)]
    original = await insert_products(app, original_rows)
    expected = original[::-1]  # newest first

    seen: list[int] = []
    inserted: list[int] = []
    cursor: str | None = None
    offset_view: list[int] = []
    while True:
        params: dict[str, Any] = {"limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get(PRODUCTS, params=params)).json()
        seen.extend(item["id"] for item in body["items"])
        # What OFFSET paging would have returned for the same page right now.
        offset_page = await client.get(PRODUCTS, params={"limit": 100})
        all_now = [item["id"] for item in offset_page.json()["items"]]
        offset_view.extend(all_now[len(offset_view) : len(offset_view) + 7])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # Writers add rows at the head (newer than everything) while the client pages.
        now = utcnow()
        inserted += await insert_products(
            app,
            [product_row(1000 + len(inserted) + k, created_at=now + timedelta(seconds=k))
             for k in range(5)],
        )  # fmt: skip

    assert seen == expected
    assert len(seen) == len(set(seen))
    assert not set(seen) & set(inserted)
    # The test has teeth: offset paging over the same writes repeats rows.
    assert len(offset_view) != len(set(offset_view))


async def test_ascending_pages_see_new_tail_rows_once_and_never_backdated_ones(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """Oldest first: rows appended at the tail show up exactly once at the end; rows
    written behind the cursor (backdated) are never served, and nothing repeats."""
    original = await insert_products(
        app, [product_row(i, created_at=BASE + timedelta(seconds=i)) for i in range(30)]
    )
    seen: list[int] = []
    tail: list[int] = []
    behind: list[int] = []
    cursor: str | None = None
    for page_number in range(100):
        params: dict[str, Any] = {"limit": 6, "order": "asc", "sort": "created_at"}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get(PRODUCTS, params=params)).json()
        seen.extend(item["id"] for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        if page_number < 3:
            tail += await insert_products(
                app, [product_row(500 + page_number, created_at=utcnow())]
            )
            behind += await insert_products(
                app,
                [product_row(600 + page_number, created_at=BASE - timedelta(days=1))],
            )
    assert seen == original + tail
    assert not set(seen) & set(behind)


class TestSearchRateLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # The limiter on, with a search budget of 3 per minute.
        return {"rate_limit_policies": {"search": "3/minute"}}

    async def test_search_has_its_own_rate_limit(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        await insert_products(app, [product_row(1, name="Searchable lamp")])
        statuses = [
            (await client.get(PRODUCTS, params={"q": "lamp"})).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        refused = await client.get(PRODUCTS, params={"q": "lamp"})
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        # Plain listing is not a search: the default (larger) budget still serves it.
        assert (await client.get(PRODUCTS)).status_code == 200


async def test_signed_cursor_with_a_foreign_position_is_422(
    client: httpx.AsyncClient, catalogue: tuple[list[dict[str, Any]], list[int]]
) -> None:
    """A cursor signed with our key but carrying another format (an older release, say)
    is a 422 like any bad cursor, never a 500."""
    codec = cursor_codec(TEST_SECRET)
    for sort, position in [
        ("created_at", ["yesterday", 1]),
        ("created_at", [12, 1]),
        ("price", ["cheap", 1]),
        ("name", [3, 1]),
        ("name", ["Item A", "1"]),
        ("name", ["Item A"]),
        ("name", ["Item A", 1, 2]),
    ]:
        query = ProductQuery(sort=ProductSort(sort))
        cursor = codec.encode(CatalogService._cursor_context(query), position)
        response = await client.get(PRODUCTS, params={"sort": sort, "cursor": cursor})
        assert response.status_code == 422, (sort, position, response.text)
        assert response.json()["error"]["code"] == "invalid_cursor"
    # The same codec and context with a well-formed position works: the test has teeth.
    good = codec.encode(
        CatalogService._cursor_context(ProductQuery(sort=ProductSort.NAME)), ["Item A", 0]
    )
    assert (await client.get(PRODUCTS, params={"sort": "name", "cursor": good})).status_code == 200


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_deep_pages_seek_the_index_like_the_first_page(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    """A page deep in a 20k-row table is an index seek, never a scan and sort: its plan is
    the first page's plan (the benchmark measures the cost; this pins the plan)."""
    await insert_products(
        app,
        [product_row(i, created_at=BASE + timedelta(seconds=i), price_minor=i % 997,
                     name=f"Item {i % 1013}") for i in range(20_000)],
    )  # fmt: skip
    engine: AsyncEngine = app.state.services.engine
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE products"))
        await conn.commit()
    indexes = {
        "created_at": "ix_products_status_created_at_id",
        "price": "ix_products_status_price_minor_id",
        "name": "ix_products_status_name_id",
    }
    for sort, index in indexes.items():
        for order in ("asc", "desc"):
            params: dict[str, Any] = {"limit": 100, "sort": sort, "order": order}
            cursor = None
            for _ in range(50):  # 5,000 rows deep
                seek = {"cursor": cursor} if cursor else {}
                page = await client.get(PRODUCTS, params={**params, **seek})
                cursor = page.json()["next_cursor"]
            with captured_statements(engine) as statements:
                deep = await client.get(PRODUCTS, params={**params, "cursor": cursor})
            assert deep.status_code == 200
            assert len(deep.json()["items"]) == 100
            listing = [(s, p) for s, p in statements if "FROM products" in s]
            assert len(listing) == 1, statements
            plan = await explain(app, *listing[0])
            assert index in plan, (sort, order, plan)
            assert "Sort" not in plan, (sort, order, plan)
            assert "Seq Scan" not in plan, (sort, order, plan)
