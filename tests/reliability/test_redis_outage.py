"""Redis stopped under load (a private redis-server; the session's is never stopped)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.reliability.conftest import Figures
from tests.reliability.load import (
    Attempt,
    GetJson,
    LoadGenerator,
    ReadinessSample,
    poll_readiness,
    seconds_since,
    wait_for,
)
from tests.reliability.support import AppServer, Shop, seed_shop, server_env
from tests.support.services import PostgresService, RedisServer, ServiceUnavailable, require_or_skip

SETTLE_SECONDS = 2.0
OUTAGE_SECONDS = 4.0
DETECT_LIMIT_SECONDS = 5.0
RECOVERY_LIMIT_SECONDS = 5.0
MAX_LOAD_SECONDS = 60.0
#: The strict policy /_test/limited is counted against (per client address).
PROBE_LIMIT = 5
PROBE_REQUESTS = PROBE_LIMIT + 3
#: RATE_LIMIT_RETRY_SECONDS and CACHE_RETRY_SECONDS: the back-off after a Redis error.
RETRY_SECONDS = 1.0
#: Consecutive counted reads that show every worker's limiter is back (~0.6 s of load).
COUNTED_STREAK = 30


@dataclass
class App:
    server: AppServer
    shop: Shop
    redis: RedisServer


@pytest.fixture(scope="module")
def app(
    postgres_server: PostgresService, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    try:
        redis = RedisServer().start()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    dbname = f"redis_outage_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(dbname, template=pg_template)
    server: AppServer | None = None
    try:
        env = server_env(
            postgres_server.url(dbname),
            REDIS_URL=redis.url(),
            # The default: readiness reports Redis but does not fail on it ("degraded").
            REDIS_REQUIRED="false",
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_FAIL_OPEN="true",
            # Generous for the load's few addresses; the probe's policy is the strict one.
            RATE_LIMIT_DEFAULT="100000/minute",
            RATE_LIMIT_POLICIES=json.dumps({"testing": f"{PROBE_LIMIT}/minute"}),
            RATE_LIMIT_RETRY_SECONDS=str(RETRY_SECONDS),
            CACHE_RETRY_SECONDS=str(RETRY_SECONDS),
        )
        workdir = tmp_path_factory.mktemp("redis-outage")
        server = AppServer("app", env, workdir).start()
        shop = seed_shop(
            postgres_server, dbname, server.url("/api/v1/auth/login"), buyers=0, catalog=4
        )
        yield App(server, shop, redis)
    finally:
        if server is not None:
            server.close()
        redis.close()
        postgres_server.drop_database(dbname)


async def probe_limiter(server: AppServer, source: str) -> list[int]:
    """PROBE_REQUESTS requests from a fresh client address to a route limited to
    PROBE_LIMIT per minute per address: the statuses, in order."""
    transport = httpx.AsyncHTTPTransport(local_address=source)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:
        return [
            (await client.get(server.url("/_test/limited"))).status_code
            for _ in range(PROBE_REQUESTS)
        ]


def enforced(statuses: list[int]) -> bool:
    return statuses == [200] * PROBE_LIMIT + [429] * (PROBE_REQUESTS - PROBE_LIMIT)


def redis_state(sample: ReadinessSample) -> str:
    return f"{sample.status} {sample.state} redis={sample.checks.get('redis')}"


def cache_hit(attempt: Attempt) -> bool:
    """Served without loading: from Redis, or (during an outage too) by joining another
    request's load in the same process."""
    return attempt.op == "product" and attempt.headers.get("x-cache") == "hit"


def counting_again(reads: list[Attempt], since: float) -> float | None:
    """When the reads started after `since` began to be counted without exception: the
    start of the final run of COUNTED_STREAK or more counted reads (each worker's limiter
    recovers on its own, so one counted read is not enough)."""
    after = [a for a in reads if a.started >= since]
    last_uncounted = max((a.started for a in after if not counted(a)), default=since)
    streak = [a for a in after if a.started > last_uncounted]
    return min(a.started for a in streak) if len(streak) >= COUNTED_STREAK else None


def cached_products(redis: RedisServer) -> int:
    """Product entries stored in Redis (the cache is the only writer of such keys)."""
    try:
        return len(redis.command("KEYS", "*:product:*"))
    except OSError:
        return 0


def counted(attempt: Attempt) -> bool:
    """The default policy counted this request in Redis (it says so in the headers)."""
    return attempt.op == "product" and "ratelimit-limit" in attempt.headers


async def test_redis_outage_degrades_and_recovers(app: App, figures: Figures) -> None:
    """Claim: with Redis stopped under load, product reads keep answering 200 (the cache is
    bypassed); the rate limiter applies its policy, fail open (requests served, no counts,
    no RateLimit headers); /health/ready reports redis failing as "degraded" with HTTP 200
    (REDIS_REQUIRED=false). When Redis returns, within 5 s readiness is "ok" again, the
    cache is refilled in Redis, requests are counted and the strict limit refuses again."""
    server, shop, redis = app.server, app.shop, app.redis
    reads = [
        GetJson("product", shop.product_paths(), keep_headers=("x-cache", "ratelimit-limit"))
        for _ in range(6)
    ]
    async with (
        poll_readiness(server.url("/health/ready")) as readiness,
        LoadGenerator(
            server.url(""), [[op] for op in reads], max_seconds=MAX_LOAD_SECONDS, first_address=130
        ) as load,
    ):
        await asyncio.sleep(SETTLE_SECONDS)
        before = await probe_limiter(server, "127.0.0.141")
        stopping = time.monotonic()
        await asyncio.to_thread(redis.stop)
        degraded_seen = await wait_for(
            lambda: readiness.first(_degraded, after=stopping) is not None, DETECT_LIMIT_SECONDS
        )
        during = await probe_limiter(server, "127.0.0.142")
        outage_reads_from = time.monotonic()
        await asyncio.sleep(max(0.0, stopping + OUTAGE_SECONDS - time.monotonic()))
        restarting = time.monotonic()
        await asyncio.to_thread(redis.start)
        back = time.monotonic()
        refilled: float | None = None

        def recovered() -> bool:
            nonlocal refilled
            if refilled is None and cached_products(redis):
                refilled = time.monotonic()
            return (
                refilled is not None
                and readiness.first(_ok, after=back) is not None
                and counting_again(load.report.of("product"), back) is not None
                # Each worker's limiter waits RETRY_SECONDS after its last failure before it
                # asks Redis again; until then it still fails open.
                and time.monotonic() > back + RETRY_SECONDS + 0.5
            )

        await wait_for(recovered, RECOVERY_LIMIT_SECONDS * 3)
        after = await probe_limiter(server, "127.0.0.143")
        await asyncio.sleep(SETTLE_SECONDS)
    report = load.report

    detected = readiness.first(_degraded, after=stopping)
    ready_again = readiness.first(_ok, after=back)
    counted_again = counting_again(report.of("product"), back)
    outage_reads = [a for a in report.of("product") if outage_reads_from <= a.started < restarting]
    figures(
        "redis outage",
        reads=report.sent("product"),
        failed=len(report.failures()),
        reads_during_outage=len(outage_reads),
        reads_counted_during_outage=sum(1 for a in outage_reads if counted(a)),
        coalesced_reads_during_outage=sum(1 for a in outage_reads if cache_hit(a)),
        p99_s=report.quantile(0.99),
        limiter_before=before,
        limiter_during=during,
        limiter_after=after,
        readiness_during=sorted(
            {redis_state(s) for s in readiness.samples if stopping < s.at < back}
        ),
        degraded_after_s=seconds_since(detected, stopping),
        ready_ok_after_return_s=seconds_since(ready_again, back),
        cache_refilled_after_return_s=seconds_since(refilled, back),
        every_read_counted_after_return_s=seconds_since(counted_again, back),
    )

    assert report.failures() == [], report.failure_lines()
    assert report.first(cache_hit, after=0) is not None, "the product cache never hit"
    assert cached_products(redis), "the cache wrote nothing to Redis"
    assert enforced(before), before
    # Fail open: the outage lets every request through, and counts none of them.
    assert during == [200] * PROBE_REQUESTS
    assert outage_reads
    assert not [a for a in outage_reads if counted(a)]
    assert degraded_seen, [redis_state(s) for s in readiness.samples[-5:]]
    assert detected is not None
    assert detected - stopping <= DETECT_LIMIT_SECONDS
    # Degraded is still ready: Redis is not required.
    assert not [s for s in readiness.samples if s.status != 200]
    assert ready_again is not None
    assert ready_again - back <= RECOVERY_LIMIT_SECONDS
    assert refilled is not None
    assert refilled - back <= RECOVERY_LIMIT_SECONDS
    assert report.first(cache_hit, after=refilled) is not None
    assert counted_again is not None
    assert counted_again - back <= RECOVERY_LIMIT_SECONDS
    assert enforced(after), after


def _degraded(sample: ReadinessSample) -> bool:
    return sample.state == "degraded" and sample.checks.get("redis") == "failing"


def _ok(sample: ReadinessSample) -> bool:
    return sample.status == 200 and sample.state == "ok" and sample.checks.get("redis") == "ok"
