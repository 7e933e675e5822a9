"""Full-text search with `q`: relevant results on both backends (PostgreSQL tsvector +
websearch_to_tsquery, SQLite FTS5), hostile input, and on PostgreSQL the GIN index in the
plan of the query the app really runs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.factories import (
    PRODUCTS,
    captured_statements,
    explain,
    insert_products,
    product_row,
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit_enabled": False}


CATALOGUE = [
    ("Steel kettle", "Boils water in two minutes on any hob."),
    ("Electric kettle", "Cordless, 1.7 litres, with a blue light."),
    ("Desk lamp", "LED lamp with a steel arm."),
    ("Camping stove", "Boils a litre of water in four minutes."),
    ("Walnut desk", "Solid walnut writing desk."),
    ("Kettlebell 16 kg", "Cast iron."),
]


@pytest.fixture
async def catalogue(app: FastAPI, client: httpx.AsyncClient) -> dict[str, int]:
    rows = [
        product_row(i, name=name, description=description)
        for i, (name, description) in enumerate(CATALOGUE)
    ]
    ids = await insert_products(app, rows)
    return {name: pid for (name, _), pid in zip(CATALOGUE, ids, strict=True)}


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> set[str]:
    response = await client.get(PRODUCTS, params={"q": q, "limit": 100, **params})
    assert response.status_code == 200, (q, response.text)
    return {item["name"] for item in response.json()["items"]}


RELEVANCE: list[tuple[str, set[str]]] = [
    ("kettle", {"Steel kettle", "Electric kettle"}),
    ("Kettles", {"Steel kettle", "Electric kettle"}),  # case and stemming
    ("boiling water", {"Steel kettle", "Camping stove"}),
    ("steel", {"Steel kettle", "Desk lamp"}),  # name or description
    ("desk", {"Desk lamp", "Walnut desk"}),
    ("walnut desk", {"Walnut desk"}),  # every word must match
    ("kettle -electric", {"Steel kettle"}),  # websearch syntax: exclusion
    ('"desk lamp"', {"Desk lamp"}),  # phrase
    ("lamp or stove", {"Desk lamp", "Camping stove"}),
    ("the kettle", {"Steel kettle", "Electric kettle"}),  # stop words do not count
    ("teapot", set()),
    ("the", set()),  # nothing searchable left
    ("NEAR(kettle lamp)", set()),  # FTS5 syntax is not interpreted on SQLite
    ("name:kettle", set()),
    ("ключ", set()),
]


async def test_search_returns_relevant_products(
    client: httpx.AsyncClient, catalogue: dict[str, int]
) -> None:
    for q, expected in RELEVANCE:
        assert await search(client, q) == expected, q


HOSTILE = ['kettle" OR name:*', "'; drop table products; --", "***", '"', "-", "or or or",
           "-kettle", "kettle*", "(lamp", "\\", "%_%", "a" * 200]  # fmt: skip


async def test_hostile_search_input_is_just_text(
    client: httpx.AsyncClient, catalogue: dict[str, int]
) -> None:
    """Never a syntax error or a 500: at most some of the catalogue."""
    for q in HOSTILE:
        assert await search(client, q) <= set(catalogue), q
    assert (await client.get(f"{PRODUCTS}/{catalogue['Steel kettle']}")).status_code == 200


async def test_search_combines_with_filters_and_pagination(
    client: httpx.AsyncClient, catalogue: dict[str, int], app: FastAPI
) -> None:
    await insert_products(
        app,
        [product_row(100 + i, name=f"Travel kettle {i}", price_minor=100 * i) for i in range(7)],
    )
    cheap = await search(client, "kettle", max_price=300)
    assert cheap == {"Travel kettle 0", "Travel kettle 1", "Travel kettle 2", "Travel kettle 3"}

    names: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"q": "kettle", "limit": 3, "sort": "name", "order": "asc"}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get(PRODUCTS, params=params)).json()
        names += [item["name"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert names == sorted(
        ["Steel kettle", "Electric kettle"] + [f"Travel kettle {i}" for i in range(7)]
    )


async def test_search_follows_updates(
    client: httpx.AsyncClient, catalogue: dict[str, int], app: FastAPI
) -> None:
    """The index follows writes (generated column on PostgreSQL, triggers on SQLite)."""
    from tests.factories import staff

    admin = await staff(client, app)
    url = f"{PRODUCTS}/{catalogue['Walnut desk']}"
    etag = (await client.get(url)).headers["etag"]
    renamed = await client.patch(
        url, json={"name": "Walnut bookshelf", "description": "Five shelves."},
        headers={**admin.headers, "If-Match": etag},
    )  # fmt: skip
    assert renamed.status_code == 200, renamed.text
    assert await search(client, "bookshelf") == {"Walnut bookshelf"}
    assert await search(client, "desk") == {"Desk lamp"}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_search_query_uses_the_gin_index(client: httpx.AsyncClient, app: FastAPI) -> None:
    """10k products; the statement the API runs for `q` is EXPLAINed as-is (same SQL, same
    parameters) after ANALYZE: the plan reads ix_products_search_vector. enable_seqscan
    stays on: the planner picks the index on its own."""
    words = ["red", "blue", "steel", "oak", "linen", "smart", "compact", "heavy"]
    nouns = ["kettle", "lamp", "chair", "desk", "mug", "jacket", "bottle", "tent"]
    rows = [
        product_row(
            i,
            name=f"{words[i % 8].title()} {nouns[(i // 8) % 8]} {i}",
            description=f"A {words[(i // 3) % 8]} {nouns[i % 8]} for everyday use.",
        )
        for i in range(10_000)
    ]
    # A few rare products: what a shopper searching a big catalogue looks for.
    for i in range(0, 10_000, 1_250):
        rows[i]["name"] = f"Titanium spork {i}"
    await insert_products(app, rows)
    engine: AsyncEngine = app.state.services.engine
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE products"))
        await conn.commit()

    with captured_statements(engine) as statements:
        response = await client.get(PRODUCTS, params={"q": "titanium spork", "limit": 20})
    assert response.status_code == 200
    assert len(response.json()["items"]) == 8
    search_sql = [(s, p) for s, p in statements if "websearch_to_tsquery" in s]
    assert len(search_sql) == 1, statements
    statement, parameters = search_sql[0]

    plan = await explain(app, statement, parameters)
    assert "ix_products_search_vector" in plan, plan
    assert "Seq Scan" not in plan, plan
