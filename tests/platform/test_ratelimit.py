"""Rate limiting against real Redis and the in-process backend: named and default policies,
keys (proxy-aware IP, user, username), 429 envelope and headers, exemptions, and the
configured fail-open / fail-closed behaviour with Redis down."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from slipway.app import create_app
from slipway.platform.logging import configure_logging
from slipway.platform.settings import DEFAULT_RATE_LIMIT_POLICIES, Settings
from tests.conftest import make_settings
from tests.support.services import RedisServer, RedisService, ServiceUnavailable, require_or_skip

pytestmark = pytest.mark.timeout(120)

TRUSTED_PEER = ("127.0.0.1", 50000)
RATE_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def limit_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_url(limit_mode: str, request: pytest.FixtureRequest) -> str | None:
    if limit_mode == "memory":
        return None
    server: RedisService = request.getfixturevalue("redis_server")
    return server.url()


def limit_settings(redis_url: str | None, **overrides: Any) -> Settings:
    # A key prefix per test: the session's Redis is shared with other tests.
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "rate_limit_key_prefix": f"slipway-test:{uuid.uuid4().hex[:8]}",
        "rate_limit_policies": {"testing": "3/minute"},
    }
    values.update(overrides)
    return make_settings(**values)


class AsUser:
    """Plays the identity layer: X-Test-User becomes scope["state"]["user_id"]."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A state dict per request, as uvicorn gives (asgi-lifespan shares one).
        scope["state"] = state = dict(scope.get("state", {}))
        for name, value in scope.get("headers", ()):
            if name == b"x-test-user":
                state["user_id"] = value.decode()
        await self.app(scope, receive, send)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[ASGIApp]:
    async with LifespanManager(
        AsUser(create_app(settings)), startup_timeout=60, shutdown_timeout=60
    ) as manager:
        yield manager.app


def client_for(app: ASGIApp, peer: tuple[str, int] = TRUSTED_PEER) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=peer)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def limiter_log() -> Iterator[list[logging.LogRecord]]:
    configure_logging("INFO", "json")
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect()
    logger = logging.getLogger("slipway.ratelimit")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def warnings_in(records: list[logging.LogRecord]) -> list[str]:
    return [r.msg["event"] for r in records if r.levelno == logging.WARNING]  # type: ignore[index]


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    try:
        server = RedisServer()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    with server:
        yield server


def assert_limited(response: httpx.Response, policy: str, limit: int) -> None:
    assert response.status_code == 429
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["details"]["policy"] == policy
    assert body["error"]["details"]["limit"] == limit
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert response.headers["ratelimit-limit"] == str(limit)
    assert response.headers["ratelimit-remaining"] == "0"
    assert 0 <= int(response.headers["ratelimit-reset"]) <= 60
    # The security layer still wraps it.
    assert response.headers["x-content-type-options"] == "nosniff"


# --- policies -----------------------------------------------------------------------------


async def test_named_policy_counts_down_then_refuses(redis_url: str | None) -> None:
    async with running(limit_settings(redis_url)) as app, client_for(app) as client:
        allowed = [await client.get("/_test/limited") for _ in range(3)]
        refused = await client.get("/_test/limited")

    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert [r.headers["ratelimit-limit"] for r in allowed] == ["3", "3", "3"]
    assert [r.headers["ratelimit-remaining"] for r in allowed] == ["2", "1", "0"]
    assert all(0 < int(r.headers["ratelimit-reset"]) <= 60 for r in allowed)
    assert_limited(refused, "testing", 3)


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter", "fixed-window"])
async def test_every_strategy_enforces_the_limit(redis_url: str | None, strategy: str) -> None:
    settings = limit_settings(redis_url, rate_limit_strategy=strategy)
    async with running(settings) as app, client_for(app) as client:
        statuses = [(await client.get("/_test/limited")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_default_policy_covers_api_and_exempts_health(redis_url: str | None) -> None:
    settings = limit_settings(redis_url, rate_limit_default="4/minute")
    async with running(settings) as app, client_for(app) as client:
        api = [await client.get("/api/v1/_no_such_route") for _ in range(5)]
        health = [await client.get("/health/live") for _ in range(8)]
        preflight = await client.options("/api/v1/_no_such_route")

    assert [r.status_code for r in api] == [404, 404, 404, 404, 429]
    assert [r.headers["ratelimit-remaining"] for r in api[:4]] == ["3", "2", "1", "0"]
    assert_limited(api[4], "default", 4)
    assert [r.status_code for r in health] == [200] * 8
    assert not any(h in r.headers for r in health for h in RATE_HEADERS)
    assert preflight.status_code != 429  # OPTIONS (CORS preflight) is never counted


async def test_exemptions_hold_even_when_every_path_is_limited(redis_url: str | None) -> None:
    settings = limit_settings(redis_url, rate_limit_default="2/minute", rate_limit_paths=["/"])
    async with running(settings) as app, client_for(app) as client:
        health = [(await client.get("/health")).status_code for _ in range(5)]
        info = [(await client.get("/info")).status_code for _ in range(3)]
    assert health == [200] * 5
    assert info == [200, 200, 429]


async def test_tightest_policy_is_reported(redis_url: str | None) -> None:
    """A limited route under the default policy reports whichever budget is closer to
    running out, and never two sets of headers."""
    settings = limit_settings(redis_url, rate_limit_default="100/minute", rate_limit_paths=["/"])
    async with running(settings) as app, client_for(app) as client:
        response = await client.get("/_test/limited")
    assert response.headers.get_list("ratelimit-limit") == ["3"]
    assert response.headers["ratelimit-remaining"] == "2"


# --- keys ---------------------------------------------------------------------------------


async def test_clients_behind_the_trusted_proxy_have_their_own_budget(
    redis_url: str | None,
) -> None:
    async with running(limit_settings(redis_url)) as app, client_for(app) as client:
        first = [
            (await client.get("/_test/limited", headers={"X-Forwarded-For": "203.0.113.1"}))
            for _ in range(4)
        ]
        second = await client.get("/_test/limited", headers={"X-Forwarded-For": "203.0.113.2"})
    assert [r.status_code for r in first] == [200, 200, 200, 429]
    assert second.status_code == 200


async def test_untrusted_peers_cannot_spoof_forwarded_for(redis_url: str | None) -> None:
    async with (
        running(limit_settings(redis_url)) as app,
        client_for(app, ("198.51.100.7", 40000)) as client,
    ):
        statuses = [
            (
                await client.get("/_test/limited", headers={"X-Forwarded-For": f"203.0.113.{n}"})
            ).status_code
            for n in range(4)
        ]
    # Every request is the untrusted peer itself, whatever the header claims.
    assert statuses == [200, 200, 200, 429]


async def test_login_policy_is_per_ip_and_per_username(redis_url: str | None) -> None:
    settings = limit_settings(redis_url, rate_limit_policies={"login": "2/minute"})

    def from_ip(ip: str) -> dict[str, str]:
        return {"X-Forwarded-For": ip}

    async with running(settings) as app, client_for(app) as client:

        async def login(username: str, ip: str) -> int:
            response = await client.post(
                "/_test/login", json={"username": username}, headers=from_ip(ip)
            )
            return response.status_code

        alice = [await login("alice", "203.0.113.1"), await login("Alice ", "203.0.113.2")]
        # alice's budget is spent, whichever address she comes from
        alice_again = await login("alice", "203.0.113.3")
        # bob from an address that has one attempt left
        bob = await login("bob", "203.0.113.3")
        # that address has now used both of its attempts
        carol = await login("carol", "203.0.113.3")

    assert alice == [200, 200]
    assert alice_again == 429
    assert bob == 200
    assert carol == 429


async def test_authenticated_user_has_one_budget_across_addresses(
    redis_url: str | None,
) -> None:
    settings = limit_settings(redis_url, rate_limit_default="3/minute")
    async with running(settings) as app, client_for(app) as client:

        async def get(ip: str, user: str | None = None) -> int:
            headers = {"X-Forwarded-For": ip}
            if user:
                headers["X-Test-User"] = user
            return (await client.get("/api/v1/_no_such_route", headers=headers)).status_code

        user = [await get(ip, "u1") for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3")]
        fourth = await get("203.0.113.4", "u1")
        anonymous = await get("203.0.113.4")

    assert user == [404, 404, 404]
    assert fourth == 429
    assert anonymous == 404


# --- Redis down ---------------------------------------------------------------------------


async def test_redis_down_fails_open_by_default_and_logs_once(
    private_redis: RedisServer, limiter_log: list[logging.LogRecord]
) -> None:
    settings = limit_settings(private_redis.url(), rate_limit_retry_seconds=0.0)
    async with running(settings) as app, client_for(app) as client:
        assert (await client.get("/_test/limited")).status_code == 200
        private_redis.stop()
        during = [await client.get("/_test/limited") for _ in range(6)]
        api = await client.get("/api/v1/_no_such_route")
        private_redis.start()
        after = [await client.get("/_test/limited") for _ in range(4)]

    # Served, beyond the limit, without headers that would be guesses.
    assert [r.status_code for r in during] == [200] * 6
    assert not any(h in r.headers for r in during for h in RATE_HEADERS)
    assert api.status_code == 404
    assert warnings_in(limiter_log) == ["ratelimit_backend_unavailable"]
    assert "ratelimit_backend_recovered" in [r.msg["event"] for r in limiter_log]  # type: ignore[index]
    # Enforced again once Redis is back (it restarted empty: a fresh budget of 3).
    assert [r.status_code for r in after] == [200, 200, 200, 429]


async def test_redis_down_fails_closed_when_configured(
    private_redis: RedisServer, limiter_log: list[logging.LogRecord]
) -> None:
    settings = limit_settings(
        private_redis.url(), rate_limit_fail_open=False, rate_limit_retry_seconds=0.0
    )
    async with running(settings) as app, client_for(app) as client:
        assert (await client.get("/_test/limited")).status_code == 200
        private_redis.stop()
        named = [await client.get("/_test/limited") for _ in range(3)]
        default = await client.get("/api/v1/_no_such_route")
        health = await client.get("/health/live")

    for response in [*named, default]:
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "rate_limit_unavailable"
        assert error["request_id"] == response.headers["x-request-id"]
        assert int(response.headers["retry-after"]) >= 1
    assert health.status_code == 200
    assert warnings_in(limiter_log) == ["ratelimit_backend_unavailable"]


# --- settings -----------------------------------------------------------------------------


def test_policies_from_environment_merge_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_POLICIES", orjson.dumps({"login": "10/minute"}).decode())
    monkeypatch.setenv("RATE_LIMIT_EXEMPT_PATHS", "/health,/metrics,/status")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.rate_limit_policies["login"] == "10/minute"
    assert settings.rate_limit_policies["register"] == DEFAULT_RATE_LIMIT_POLICIES["register"]
    assert settings.rate_limit_exempt_paths == ["/health", "/metrics", "/status"]
    assert DEFAULT_RATE_LIMIT_POLICIES["login"] == "5/minute"


@pytest.mark.parametrize(
    "overrides",
    [{"rate_limit_default": "lots"}, {"rate_limit_policies": {"login": "5 per fortnight"}}],
)
def test_malformed_limits_refuse_to_start(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_settings(**overrides)
