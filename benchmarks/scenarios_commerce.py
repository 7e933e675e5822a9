"""Issue 5's commerce figures, as same-round pairs on the suite's PostgreSQL (1M products)
and Redis stack. The registry's own scenarios measure each request against bare FastAPI;
these divide one commerce request by its natural counterpart:

- `commerce_deep_page_100k` vs `products_first_page`: the keyset page that OFFSET 100000
  would return (newest first, the default listing) against the first page. Keyset seeks the
  (status, created_at, id) index, so depth should cost nothing (target: p50 <= 1.5x).
- `commerce_product_uncached_hot` vs `product_cached`: the same 256 product ids, once with
  the cache off (each read is a PostgreSQL query) and once served from Redis.
- `commerce_order_replay` vs `order_create`: a retried POST /api/v1/orders (same
  Idempotency-Key and body: the stored response is replayed, nothing is bought) against
  creating a fresh order with a unique key.

Loaded by bench/registry.py (EXTENSIONS); run them with
`uv run python benchmarks/run.py --scenarios commerce_deep_page_100k,commerce_product_uncached_hot,commerce_order_replay`
(their baselines are added). The servers are the registry's `slipway` and `slipway_nocache`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping

from bench import stack as stack_module
from bench.model import LaunchContext, Scenario, ServerSpec, StackInfo, Target

PRODUCTS = "/api/v1/products"
#: Rows skipped before the deep page: "offset 100k" of the 1M-row table.
DEEP_OFFSET = 100_000
#: The replayed order: one key, one body, for the whole run.
REPLAY_KEY = "commerce-bench-replay"


def _stack(ctx: LaunchContext) -> StackInfo:
    if ctx.stack is None:
        raise RuntimeError("the commerce scenarios need the PostgreSQL/Redis stack")
    return ctx.stack


@functools.cache
def _deep_position(database_url: str, offset: int) -> tuple[str, int]:
    """(created_at, id) of the row the page starts after, in the default listing's order."""
    import asyncpg  # type: ignore[import-untyped]

    async def query() -> tuple[str, int]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        connection = await asyncpg.connect(dsn)
        try:
            row = await connection.fetchrow(
                "SELECT created_at, id FROM products WHERE status = 'active' "
                "ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
                offset - 1,
            )
        finally:
            await connection.close()
        if row is None:
            raise RuntimeError(f"the large database has fewer than {offset} active products")
        return row[0].isoformat(), int(row[1])

    return asyncio.run(query())


def deep_page_100k_path(ctx: LaunchContext) -> str:
    """The default listing from row 100,001 on: a cursor the app itself would have issued
    after 5,000 pages of 20 (signed with the servers' key by the app's own codec)."""
    from slipway.catalog.schemas import ProductQuery
    from slipway.catalog.service import CatalogService
    from slipway.platform.pagination import cursor_codec

    stack = _stack(ctx)
    # 10% into the table: OFFSET 100000 of the full run's 1M rows, less in a --quick run.
    offset = min(DEEP_OFFSET, stack.seed_sizes[stack_module.LARGE] // 10)
    created_at, product_id = _deep_position(stack.databases[stack_module.LARGE], offset)
    context = CatalogService._cursor_context(ProductQuery())
    cursor = cursor_codec(stack.secret_key).encode(context, [created_at, product_id])
    return f"{PRODUCTS}?cursor={cursor}"


def hot_ids_env(ctx: LaunchContext) -> Mapping[str, str]:
    ids = _stack(ctx).facts["cached_product_ids"]
    return {"BENCH_IDS": ",".join(str(pid) for pid in ids)}


_replay_tokens: dict[str, str] = {}


def _replay_request(ctx: LaunchContext) -> tuple[str, int]:
    """(access token, product id) of the replayed order; one login per server and run (the
    env builders run more than once)."""
    stack = _stack(ctx)
    base_url = f"http://127.0.0.1:{ctx.port}"
    if base_url not in _replay_tokens:
        _replay_tokens[base_url] = stack_module.login_tokens(base_url, stack, 1)[0]
    return _replay_tokens[base_url], int(stack.facts["order_product_ids"][0])


def replay_env(ctx: LaunchContext) -> Mapping[str, str]:
    token, product_id = _replay_request(ctx)
    return {
        "BENCH_TOKEN": token,
        "BENCH_PRODUCT_ID": str(product_id),
        "BENCH_IDEMPOTENCY_KEY": REPLAY_KEY,
    }


def _check_deep_page(base_url: str, ctx: LaunchContext) -> str | None:
    import httpx

    path = deep_page_100k_path(ctx)
    first = httpx.get(f"{base_url}{PRODUCTS}", timeout=30.0)
    deep = httpx.get(base_url + path, timeout=30.0)
    if deep.status_code != 200:
        return f"GET {path} answered {deep.status_code}: {deep.text[:300]}"
    items = deep.json().get("items") or []
    if len(items) != 20:
        return f"the deep page holds {len(items)} products, not a full page of 20"
    if {item["id"] for item in items} & {item["id"] for item in first.json()["items"]}:
        return "the deep page overlaps the first page: the cursor did not seek"
    return None


def _check_hot_read(base_url: str, ctx: LaunchContext) -> str | None:
    import httpx

    product_id = _stack(ctx).facts["cached_product_ids"][0]
    for _ in range(2):  # the second read of an id would be a hit with the cache on
        response = httpx.get(f"{base_url}{PRODUCTS}/{product_id}", timeout=30.0)
        if response.status_code != 200:
            return f"GET {PRODUCTS}/{product_id} answered {response.status_code}"
        if response.headers.get("x-cache") != "miss":
            cache = response.headers.get("x-cache")
            return f"the cache is not off on this server (X-Cache: {cache})"
    return None


def _check_replay(base_url: str, ctx: LaunchContext) -> str | None:
    """Place the order once (or replay it from an earlier run): every measured request is
    then a replay of the stored 201."""
    import httpx

    token, product_id = _replay_request(ctx)
    request = {
        "json": {"items": [{"product_id": product_id, "quantity": 1}]},
        "headers": {"Authorization": f"Bearer {token}", "Idempotency-Key": REPLAY_KEY},
        "timeout": 30.0,
    }
    first = httpx.post(f"{base_url}/api/v1/orders", **request)  # type: ignore[arg-type]
    again = httpx.post(f"{base_url}/api/v1/orders", **request)  # type: ignore[arg-type]
    if first.status_code != 201 or again.status_code != 201:
        return f"POST /api/v1/orders answered {first.status_code}, then {again.status_code}"
    if again.headers.get("idempotent-replayed") != "true" or again.content != first.content:
        return "the second request with the same Idempotency-Key was not a replay"
    return None


SERVERS: dict[str, ServerSpec] = {}

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="commerce_deep_page_100k",
            server="slipway",
            path=PRODUCTS,
            path_factory=deep_page_100k_path,
            description="GET /api/v1/products?cursor=…: the keyset page at OFFSET 100000 "
            "of 1M products (vs the first page)",
            lua_script="api_get.lua",
            preflight=_check_deep_page,
            baseline="products_first_page",
            target=Target(max_p50_ratio=1.5, min_throughput_ratio=0.7),
            quick=False,
        ),
        Scenario(
            name="commerce_product_uncached_hot",
            server="slipway_nocache",
            path=f"{PRODUCTS}/{{id}}",
            description="GET /api/v1/products/{id}, the cached scenario's 256 ids with the "
            "cache off (vs served from Redis)",
            lua_script="api_get.lua",
            wrk_env=hot_ids_env,
            preflight=_check_hot_read,
            baseline="product_cached",
            quick=False,
        ),
        Scenario(
            name="commerce_order_replay",
            server="slipway",
            path="/api/v1/orders",
            description="POST /api/v1/orders retried with the same Idempotency-Key and body: "
            "the stored 201 replayed (vs creating orders)",
            lua_script="commerce_order_replay.lua",
            wrk_env=replay_env,
            preflight=_check_replay,
            connections=64,
            baseline="order_create",
            target=Target(max_errors=0),
            quick=False,
        ),
    )
}
