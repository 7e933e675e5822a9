"""The cache service against real Redis and the in-process backend, and the HTTP caching
helpers: readable keys, invalidation by key and tag, one load per stampede, fail-open on
a Redis outage with one warning, ETag/304 and Cache-Control."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from enum import StrEnum
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from starlette.requests import Request

from slipway.app import create_app
from slipway.platform.cache import CacheService, cache_key, cache_tag, open_cache
from slipway.platform.http_cache import (
    CacheControl,
    CachePolicy,
    conditional_response,
    etag_matches,
    strong_etag,
)
from slipway.platform.logging import configure_logging
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.support.services import RedisServer, RedisService, ServiceUnavailable, require_or_skip

pytestmark = pytest.mark.timeout(120)


# --- helpers ------------------------------------------------------------------------------


class Records(logging.Handler):
    """Collects the structlog events one logger emits (independent of root handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, level: int | None = None) -> list[str]:
        return [
            record.msg["event"] if isinstance(record.msg, dict) else record.getMessage()
            for record in self.records
            if level is None or record.levelno == level
        ]


@pytest.fixture
def cache_log() -> Iterator[Records]:
    configure_logging("INFO", "json")
    handler = Records()
    logger = logging.getLogger("slipway.cache")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A Redis of our own, so stopping it cannot disturb other tests."""
    try:
        server = RedisServer()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    with server:
        yield server


class Source:
    """A loader that counts its calls, like a database read would be counted."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> bytes:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return orjson.dumps({"call": self.calls})


def cache_settings(redis_url: str | None, **overrides: Any) -> Settings:
    return make_settings(redis_url=redis_url, **overrides)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[CacheService]:
    async with AsyncExitStack() as stack:
        yield await open_cache(settings, stack)


@pytest.fixture(params=["memory", "redis"])
def cache_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(cache_mode: str, request: pytest.FixtureRequest) -> str | None:
    if cache_mode == "memory":
        return None
    server: RedisService = request.getfixturevalue("redis_server")
    return server.url()


@pytest.fixture
async def cache(redis_url: str | None) -> AsyncIterator[CacheService]:
    # A prefix per test: the session's Redis is shared with other tests.
    prefix = f"slipway-test-{uuid.uuid4().hex[:8]}"
    async with opened(cache_settings(redis_url, cache_prefix=prefix)) as service:
        yield service


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ) as client,
    ):
        yield client


# --- keys ---------------------------------------------------------------------------------


class Kind(StrEnum):
    BOOK = "book"


def test_keys_are_deterministic_readable_and_unambiguous() -> None:
    item = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert cache_key("product", 42) == "product:42"
    assert cache_key("product", item) == f"product:{item}"
    assert cache_key("kind", Kind.BOOK, True) == "kind:book:true"
    # Params are sorted and None dropped, so argument order never changes the key.
    assert (
        cache_key("products", params={"q": "green tea", "page": 2, "cursor": None})
        == cache_key("products", params={"page": 2, "q": "green tea"})
        == "products:page=2&q=green%20tea"
    )
    # Separators inside a part are escaped: ("a:b",) and ("a", "b") never collide.
    assert cache_key("a:b") != cache_key("a", "b")
    assert cache_tag("product", 7) == "product:7"


def test_keys_refuse_values_without_a_stable_identity() -> None:
    # ERRATA: the sample cache hashed str(args), including an AsyncSession repr.
    with pytest.raises(TypeError):
        cache_key("product", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cache_key("products", {"page": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cache_key()


async def test_stored_key_is_namespaced_versioned_and_holds_raw_bytes(
    redis_server: RedisService,
) -> None:
    product_id = uuid.uuid4().int % 10**9
    async with opened(cache_settings(redis_server.url())) as cache:
        result = await cache.get_or_load(cache_key("product", product_id), Source(), ttl=30)
        stored_key = f"slipway:v1:product:{product_id}"
        try:
            assert cache.full_key(cache_key("product", product_id)) == stored_key
            assert redis_server.command("EXISTS", stored_key) == 1
            raw = redis_server.command("GET", stored_key)
            # The response bytes as they are (no pickle), under a TTL from the call.
            assert raw.endswith(result.value.decode())
            assert 0 < redis_server.command("TTL", stored_key) <= 30
        finally:
            await cache.invalidate(cache_key("product", product_id))
        assert redis_server.command("EXISTS", stored_key) == 0


async def test_schema_version_bump_never_reads_old_entries(redis_server: RedisService) -> None:
    prefix = f"slipway-test-{uuid.uuid4().hex[:8]}"
    key = cache_key("product", 1)
    async with opened(cache_settings(redis_server.url(), cache_prefix=prefix)) as v1:
        await v1.get_or_load(key, Source())
        assert (await v1.get_or_load(key, Source())).hit
    v2_source = Source()
    settings = cache_settings(redis_server.url(), cache_prefix=prefix, cache_schema_version="v2")
    async with opened(settings) as v2:
        result = await v2.get_or_load(key, v2_source)
    assert not result.hit
    assert v2_source.calls == 1


# --- behaviour on both backends ----------------------------------------------------------


async def test_default_ttl_comes_from_settings(redis_server: RedisService) -> None:
    prefix = f"slipway-test-{uuid.uuid4().hex[:8]}"
    settings = cache_settings(redis_server.url(), cache_prefix=prefix, cache_default_ttl=123)
    async with opened(settings) as cache:
        await cache.get_or_load(cache_key("x"), Source())
        assert 115 <= redis_server.command("TTL", f"{prefix}:v1:x") <= 123


async def test_entry_expires_after_its_ttl(cache: CacheService) -> None:
    source = Source()
    key = cache_key("short", 1)
    await cache.get_or_load(key, source, ttl=1)
    assert (await cache.get_or_load(key, source, ttl=1)).hit
    await asyncio.sleep(1.3)
    assert not (await cache.get_or_load(key, source, ttl=1)).hit
    assert source.calls == 2


async def test_invalidate_by_key(cache: CacheService) -> None:
    source = Source()
    key = cache_key("product", 1)
    first = await cache.get_or_load(key, source)
    second = await cache.get_or_load(key, source)
    assert (first.hit, second.hit) == (False, True)
    assert second.value == first.value

    assert await cache.invalidate(key)
    third = await cache.get_or_load(key, source)
    assert not third.hit
    assert orjson.loads(third.value) == {"call": 2}


async def test_invalidate_by_tag_removes_only_tagged_entries(cache: CacheService) -> None:
    sources = {name: Source() for name in ("p1", "p2", "other")}
    tags = {"p1": ["products", "product:1"], "p2": ["products"], "other": ["orders"]}
    for name, source in sources.items():
        await cache.get_or_load(cache_key(name), source, tags=tags[name])

    assert await cache.invalidate_tag("products")

    results = {
        name: await cache.get_or_load(cache_key(name), source, tags=tags[name])
        for name, source in sources.items()
    }
    assert {name: r.hit for name, r in results.items()} == {
        "p1": False,
        "p2": False,
        "other": True,
    }
    assert {name: s.calls for name, s in sources.items()} == {"p1": 2, "p2": 2, "other": 1}


async def test_hundred_concurrent_cold_reads_load_once(cache: CacheService) -> None:
    source = Source(delay=0.05)
    key = cache_key("stampede", uuid.uuid4().hex)

    results = await asyncio.gather(*(cache.get_or_load(key, source) for _ in range(100)))

    assert source.calls == 1
    assert {r.value for r in results} == {orjson.dumps({"call": 1})}
    assert sum(not r.hit for r in results) == 1


async def test_values_must_be_bytes(cache: CacheService) -> None:
    async def orm_like() -> Any:
        return {"id": 1}

    with pytest.raises(TypeError):
        await cache.get_or_load(cache_key("bad"), orm_like)
    with pytest.raises(TypeError):
        await cache.set(cache_key("bad"), {"id": 1})  # type: ignore[arg-type]


async def test_ttl_below_one_second_is_refused(cache: CacheService) -> None:
    # cashews would store expire=0 as "never expires".
    with pytest.raises(ValueError):
        await cache.get_or_load(cache_key("forever"), Source(), ttl=0)


async def test_loader_errors_reach_every_waiter_and_nothing_is_cached(
    cache: CacheService,
) -> None:
    calls = 0

    async def failing() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        raise LookupError("not found")

    key = cache_key("missing", 1)
    results = await asyncio.gather(
        *(cache.get_or_load(key, failing) for _ in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results)
    assert calls == 1
    assert await cache.get(key) is None


async def test_disabled_cache_always_loads(redis_url: str | None) -> None:
    source = Source()
    async with opened(cache_settings(redis_url, cache_enabled=False)) as cache:
        for _ in range(3):
            assert not (await cache.get_or_load(cache_key("off"), source)).hit
    assert source.calls == 3


# --- across processes --------------------------------------------------------------------


async def test_two_processes_stampede_loads_once_through_the_redis_lock(
    redis_server: RedisService,
) -> None:
    """Two independent caches (own cashews instance, own pool) model two processes: the
    in-process single-flight cannot help here, only the lock in Redis can."""
    settings = cache_settings(redis_server.url(), cache_prefix=f"t-{uuid.uuid4().hex[:8]}")
    source = Source(delay=0.2)
    key = cache_key("stampede", "shared")
    async with opened(settings) as one, opened(settings) as two:
        results = await asyncio.gather(
            *(cache.get_or_load(key, source) for cache in (one, two) for _ in range(50))
        )
    assert source.calls == 1
    assert len({r.value for r in results}) == 1


async def test_invalidation_reaches_the_other_process(redis_server: RedisService) -> None:
    settings = cache_settings(redis_server.url(), cache_prefix=f"t-{uuid.uuid4().hex[:8]}")
    key = cache_key("product", 9)
    async with opened(settings) as one, opened(settings) as two:
        await one.get_or_load(key, Source(), tags=["products"])
        assert (await two.get_or_load(key, Source())).hit
        await one.invalidate_tag("products")
        assert await two.get(key) is None


# --- Redis outage -------------------------------------------------------------------------


async def test_redis_outage_fails_open_with_one_warning_and_recovers(
    private_redis: RedisServer, cache_log: Records
) -> None:
    settings = cache_settings(private_redis.url(), cache_retry_seconds=0.0)
    source = Source()
    key = cache_key("product", 5)
    async with opened(settings) as cache:
        assert not (await cache.get_or_load(key, source)).hit
        assert (await cache.get_or_load(key, source)).hit

        private_redis.stop()
        for _ in range(5):
            result = await cache.get_or_load(key, source)
            assert not result.hit
        concurrent = await asyncio.gather(*(cache.get_or_load(key, source) for _ in range(20)))
        assert await cache.invalidate(key) is False

        assert all(r.value for r in concurrent)
        assert cache_log.events(logging.WARNING) == ["cache_backend_unavailable"]
        stats = cache.stats()
        assert stats["available"] == 0
        assert stats["outages"] == 1
        assert stats["errors"] >= 6
        assert stats["bypassed"] >= 6

        private_redis.start()
        assert not (await cache.get_or_load(key, source)).hit  # restarted empty
        assert (await cache.get_or_load(key, source)).hit
        assert "cache_backend_recovered" in cache_log.events(logging.INFO)
        assert cache.stats()["available"] == 1
    # Still one warning for the one outage.
    assert cache_log.events(logging.WARNING) == ["cache_backend_unavailable"]


async def test_cached_reads_answer_200_from_source_when_redis_stops(
    private_redis: RedisServer, cache_log: Records
) -> None:
    settings = cache_settings(private_redis.url(), cache_retry_seconds=0.0)
    async with app_client(settings) as client:
        first = await client.get("/_test/cache/outage")
        assert (first.status_code, first.headers["x-cache"]) == (200, "MISS")
        assert (await client.get("/_test/cache/outage")).headers["x-cache"] == "HIT"

        private_redis.stop()
        responses = [await client.get("/_test/cache/outage") for _ in range(10)]

    assert [r.status_code for r in responses] == [200] * 10
    assert [r.json()["loads"] for r in responses] == list(range(2, 12))  # from the source
    assert cache_log.events(logging.WARNING) == ["cache_backend_unavailable"]


# --- HTTP -----------------------------------------------------------------------------------


async def test_http_cache_etag_304_and_invalidation() -> None:
    async with app_client(make_settings()) as client:
        miss = await client.get("/_test/cache/http")
        hit = await client.get("/_test/cache/http")
        etag = miss.headers["etag"]
        not_modified = await client.get("/_test/cache/http", headers={"If-None-Match": etag})
        weak = await client.get("/_test/cache/http", headers={"If-None-Match": f"W/{etag}"})
        other = await client.get("/_test/cache/http", headers={"If-None-Match": '"nope"'})
        deleted = await client.delete("/_test/cache/http")
        reloaded = await client.get("/_test/cache/http", headers={"If-None-Match": etag})

    assert (miss.status_code, miss.headers["x-cache"]) == (200, "MISS")
    assert (hit.status_code, hit.headers["x-cache"], hit.content) == (200, "HIT", miss.content)
    assert etag == strong_etag(miss.content)
    assert miss.headers["cache-control"] == "private, no-cache, max-age=0"
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == etag
    assert not_modified.headers["cache-control"] == "private, no-cache, max-age=0"
    assert "content-type" not in not_modified.headers
    assert weak.status_code == 304
    assert other.status_code == 200
    assert deleted.status_code == 204
    # New content from the source: a new ETag, so the old validator gets a full 200.
    assert reloaded.status_code == 200
    assert reloaded.json()["loads"] == 2
    assert reloaded.headers["etag"] != etag


async def test_tag_invalidation_over_http() -> None:
    async with app_client(make_settings()) as client:
        await client.get("/_test/cache/a", params={"tags": "group"})
        await client.get("/_test/cache/b", params={"tags": "other"})
        assert (await client.delete("/_test/cache-tags/group")).status_code == 204
        a = await client.get("/_test/cache/a", params={"tags": "group"})
        b = await client.get("/_test/cache/b", params={"tags": "other"})
    assert (a.headers["x-cache"], b.headers["x-cache"]) == ("MISS", "HIT")


def _request(method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": method, "headers": raw, "path": "/"})


def test_if_none_match_comparison() -> None:
    etag = '"abc"'
    assert etag_matches('"abc"', etag)
    assert etag_matches('W/"abc"', etag)
    assert etag_matches('"x", "abc"', etag)
    assert etag_matches("*", etag)
    assert not etag_matches('"abcd"', etag)
    assert not etag_matches(None, etag)


def test_conditional_response_only_for_safe_methods() -> None:
    body = b'{"a":1}'
    match = {"If-None-Match": strong_etag(body)}
    assert conditional_response(_request("GET", match), body).status_code == 304
    assert conditional_response(_request("HEAD", match), body).status_code == 304
    assert conditional_response(_request("POST", match), body).status_code == 200
    assert conditional_response(_request("GET", match), body, status_code=201).status_code == 201


def test_public_policy_is_private_for_authenticated_requests() -> None:
    policy = CachePolicy(max_age=60, public=True, stale_while_revalidate=30)
    body = b"{}"
    anonymous = conditional_response(_request(), body, policy=policy)
    signed_in = conditional_response(
        _request(headers={"Authorization": "Bearer x"}), body, policy=policy
    )
    assert anonymous.headers["cache-control"] == "public, max-age=60, stale-while-revalidate=30"
    assert signed_in.headers["cache-control"] == "private, max-age=60, stale-while-revalidate=30"
    assert CachePolicy(no_store=True).header() == "no-store"


async def test_cache_control_dependency_sets_the_route_policy() -> None:
    app = FastAPI()

    @app.get("/public", dependencies=[Depends(CacheControl(max_age=120, public=True))])
    async def public() -> dict[str, int]:
        return {"a": 1}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        anonymous = await client.get("/public")
        signed_in = await client.get("/public", headers={"Authorization": "Bearer x"})
    assert anonymous.headers["cache-control"] == "public, max-age=120"
    assert signed_in.headers["cache-control"] == "private, max-age=120"


# --- the testing router is for tests only -------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "status"),
    [("testing", 200), ("development", 404), ("staging", 404), ("production", 404)],
)
async def test_testing_routes_exist_only_in_testing(environment: str, status: int) -> None:
    settings = make_settings(
        environment=environment,
        allow_sqlite_in_production=True,
        # Production refuses to start without a broker; nothing connects in this test.
        redis_url="redis://127.0.0.1:1/0",
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/_test/limited")
    assert response.status_code == status


async def test_testing_routes_stay_out_of_the_openapi_schema() -> None:
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/_test/limited")).status_code == 200
        schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    assert not [path for path in schema.json()["paths"] if path.startswith("/_test")]
