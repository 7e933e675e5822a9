"""The middleware stack seen from a client: request ids, security headers, hosts, CORS,
GZip, HTTPS redirect, proxy headers and the access log."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.responses import PlainTextResponse

from slipway.app import create_app
from slipway.platform.logging import configure_logging
from slipway.platform.middleware.trusted_host import TrustedHostMiddleware
from slipway.platform.settings import Settings

TRUSTED_PEER = ("127.0.0.1", 50000)
UNTRUSTED_PEER = ("198.51.100.9", 40000)
API_CSP = "default-src 'none'; frame-ancestors 'none'"


@pytest.fixture
def backend() -> str:
    """Middleware does not depend on the database; one backend keeps these tests fast."""
    return "sqlite"


def add_test_routes(app: FastAPI) -> None:
    @app.get("/_test/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/_test/blob/{size}")
    async def blob(size: int) -> PlainTextResponse:
        return PlainTextResponse("x" * size)

    @app.get("/_test/log")
    async def write_logs() -> dict[str, str]:
        structlog.get_logger("slipway.test").info("structlog_line")
        import logging

        logging.getLogger("some.library").warning("stdlib line %s", "formatted")
        return {"status": "ok"}


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    application = create_app(settings)
    add_test_routes(application)
    return application


@pytest.fixture
def log_stream(app: FastAPI) -> io.StringIO:
    """Everything the app logs from now on, as JSON lines."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    return stream


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def access_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in records(stream) if r.get("logger") == "slipway.access"]


@asynccontextmanager
async def serve(
    app: FastAPI, peer: tuple[str, int] = TRUSTED_PEER, base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=peer), base_url=base_url
        ) as http,
    ):
        yield http


def assert_security_headers(response: httpx.Response, *, hsts: bool = False) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-xss-protection"] == "0"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert ("strict-transport-security" in headers) is hsts


# --- request id -----------------------------------------------------------------------------


async def test_request_id_generated_when_absent(client: httpx.AsyncClient) -> None:
    first = await client.get("/health/live")
    second = await client.get("/health/live")

    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize(
    "incoming",
    ["req-12345678", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "trace:abc.DEF_123", "a" * 128],
)
async def test_well_formed_request_id_is_echoed(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/nope", headers={"X-Request-ID": incoming})

    assert response.headers["x-request-id"] == incoming
    assert response.json()["error"]["request_id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        "a" * 129,
        "short",
        "has spaces in it",
        'quote"injection',
        "line\nbreak-123456",
        "semi;colon;12345",
        "üñíçødé-12345",
    ],
    ids=["too-long", "too-short", "spaces", "quote", "newline", "semicolon", "non-ascii"],
)
async def test_malformed_request_id_is_replaced(
    client: httpx.AsyncClient, log_stream: io.StringIO, incoming: str
) -> None:
    response = await client.get(
        "/_test/items/1", headers=[(b"X-Request-ID", incoming.encode("utf-8"))]
    )

    echoed = response.headers["x-request-id"]
    assert echoed != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    (line,) = access_lines(log_stream)
    assert line["request_id"] == echoed


# --- security headers -----------------------------------------------------------------------


async def test_security_headers_over_http(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")

    assert_security_headers(response, hsts=False)
    assert response.headers["content-security-policy"] == API_CSP


async def test_hsts_over_https_from_trusted_proxy(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Forwarded-Proto": "https"})

    assert_security_headers(response, hsts=True)
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")


async def test_forwarded_proto_ignored_from_untrusted_peer(app: FastAPI) -> None:
    async with serve(app, peer=UNTRUSTED_PEER) as http:
        response = await http.get("/health/live", headers={"X-Forwarded-Proto": "https"})

    assert_security_headers(response, hsts=False)


async def test_hsts_on_direct_https(app: FastAPI) -> None:
    async with serve(app, base_url="https://testserver") as http:
        response = await http.get("/health/live")

    assert_security_headers(response, hsts=True)


async def test_authenticated_responses_are_not_cached(client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/health/live")
    authenticated = await client.get("/health/live", headers={"Authorization": "Bearer x"})

    assert "cache-control" not in anonymous.headers
    assert authenticated.headers["cache-control"] == "no-store"


async def test_docs_pages_get_relaxed_csp_only_there(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    api = await client.get("/openapi.json")

    assert docs.status_code == 200
    assert "script-src 'self'" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert api.headers["content-security-policy"] == API_CSP


# --- trusted hosts --------------------------------------------------------------------------


async def test_untrusted_host_is_rejected_with_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/info", headers={"Host": "evil.example.com"})

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid_host"
    assert error["request_id"] == response.headers["x-request-id"]
    assert_security_headers(response)


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("localhost:8000", 200),
        ("LOCALHOST", 200),
        ("api.example.com", 200),
        ("eu.api.example.com", 200),
        ("example.com", 400),
        ("api.example.com.evil.net", 400),
        ("localhost:notaport", 400),
        ("localhost@evil.net", 400),
        ("[::1]:8000", 200),
    ],
)
@pytest.mark.parametrize(
    "settings_overrides",
    [{"allowed_hosts": ["localhost", "api.example.com", "*.api.example.com", "[::1]"]}],
)
async def test_host_matching(client: httpx.AsyncClient, host: str, status: int) -> None:
    response = await client.get("/info", headers={"Host": host})

    assert response.status_code == status


async def test_health_probes_are_exempt_from_the_host_check(client: httpx.AsyncClient) -> None:
    """Load balancers (ECS, DigitalOcean) probe with the target's IP as the Host header."""
    probe = await client.get("/health/ready", headers={"Host": "10.0.3.17:8000"})
    api = await client.get("/info", headers={"Host": "10.0.3.17:8000"})

    assert probe.status_code == 200
    assert api.status_code == 400


# --- CORS -----------------------------------------------------------------------------------

ALLOWED_ORIGIN = "https://app.example.com"


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [ALLOWED_ORIGIN]}])
async def test_cors_allows_explicit_origin(client: httpx.AsyncClient) -> None:
    simple = await client.get("/health/live", headers={"Origin": ALLOWED_ORIGIN})
    preflight = await client.options(
        "/_test/items/1",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )

    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert simple.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "PATCH" in preflight.headers["access-control-allow-methods"]


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": [ALLOWED_ORIGIN]}])
async def test_cors_does_not_reflect_other_origins(client: httpx.AsyncClient) -> None:
    simple = await client.get("/health/live", headers={"Origin": "https://evil.example.net"})
    preflight = await client.options(
        "/_test/items/1",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "GET"},
    )

    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    error = preflight.json()["error"]
    assert error["code"] == "cors_rejected"
    assert error["details"] == {"disallowed": ["origin"]}
    assert error["request_id"] == preflight.headers["x-request-id"]
    assert_security_headers(preflight)


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": []}])
async def test_no_cors_headers_without_configured_origins(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live", headers={"Origin": ALLOWED_ORIGIN})

    assert "access-control-allow-origin" not in response.headers


# --- GZip -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "compressed"), [(200, False), (1000, False), (4096, True)])
async def test_gzip_only_above_one_kilobyte(
    client: httpx.AsyncClient, size: int, compressed: bool
) -> None:
    response = await client.get(f"/_test/blob/{size}", headers={"Accept-Encoding": "gzip"})

    assert response.status_code == 200
    assert (response.headers.get("content-encoding") == "gzip") is compressed
    assert response.text == "x" * size  # httpx decodes; the content is intact either way
    if compressed:
        assert int(response.headers["content-length"]) < size
        assert_security_headers(response)
        assert response.headers["x-request-id"]


async def test_gzip_not_used_when_client_does_not_accept_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/_test/blob/4096", headers={"Accept-Encoding": "identity"})

    assert "content-encoding" not in response.headers
    assert response.content == b"x" * 4096


# --- HTTPS redirect -------------------------------------------------------------------------


@pytest.mark.parametrize("settings_overrides", [{"https_redirect": True}])
async def test_https_redirect_when_enabled(client: httpx.AsyncClient) -> None:
    plain = await client.get("/_test/items/7?x=1")
    behind_tls = await client.get("/_test/items/7", headers={"X-Forwarded-Proto": "https"})

    assert plain.status_code in (307, 308)
    assert plain.headers["location"] == "https://testserver/_test/items/7?x=1"
    assert plain.headers["x-request-id"]
    assert_security_headers(plain)
    assert behind_tls.status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"https_redirect": True}])
async def test_health_probes_are_not_redirected(client: httpx.AsyncClient) -> None:
    """Kubelets and Docker HEALTHCHECKs probe over plain HTTP on the pod network."""
    response = await client.get("/health/live")

    assert response.status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"https_redirect": False}])
async def test_no_https_redirect_when_disabled(client: httpx.AsyncClient) -> None:
    response = await client.get("/_test/items/7")

    assert response.status_code == 200


# --- proxy headers and the access log -------------------------------------------------------


async def test_client_ip_from_trusted_proxy(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    await client.get("/_test/items/1", headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.1"})

    (line,) = access_lines(log_stream)
    assert line["client_ip"] == "203.0.113.7"


async def test_client_ip_ignores_forwarded_for_from_untrusted_peer(
    app: FastAPI, log_stream: io.StringIO
) -> None:
    async with serve(app, peer=UNTRUSTED_PEER) as http:
        await http.get("/_test/items/1", headers={"X-Forwarded-For": "203.0.113.7"})

    (line,) = access_lines(log_stream)
    assert line["client_ip"] == UNTRUSTED_PEER[0]


@pytest.mark.parametrize("settings_overrides", [{"forwarded_allow_ips": ["10.1.2.3"]}])
async def test_forwarded_allow_ips_is_honoured(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    # The test client connects from 127.0.0.1, which this configuration does not trust.
    await client.get("/_test/items/1", headers={"X-Forwarded-For": "203.0.113.7"})

    (line,) = access_lines(log_stream)
    assert line["client_ip"] == "127.0.0.1"


async def test_access_log_line_fields(client: httpx.AsyncClient, log_stream: io.StringIO) -> None:
    response = await client.get("/_test/items/42", headers={"User-Agent": "probe/1.0"})

    (line,) = access_lines(log_stream)
    assert line["event"] == "request"
    assert line["method"] == "GET"
    assert line["route"] == "/_test/items/{item_id}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["user_agent"] == "probe/1.0"
    assert line["client_ip"] == "127.0.0.1"
    assert line["level"] == "info"
    assert "timestamp" in line


async def test_access_log_one_line_per_request(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    for item in range(3):
        await client.get(f"/_test/items/{item}")
    await client.get("/does/not/exist")

    lines = access_lines(log_stream)
    assert [line["route"] for line in lines] == ["/_test/items/{item_id}"] * 3 + ["<unmatched>"]
    assert [line["status"] for line in lines] == [200, 200, 200, 404]
    assert len({line["request_id"] for line in lines}) == 4


async def test_access_log_never_holds_credentials(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    await client.post(
        "/_test/items/1?token=not-logged-either",
        headers={
            "Authorization": "Bearer SECRET-BEARER-TOKEN",
            "Cookie": "session=SECRET-COOKIE-VALUE",
        },
        content=b'{"password": "SECRET-BODY-VALUE"}',
    )

    output = log_stream.getvalue()
    assert access_lines(log_stream)  # the request was logged ...
    for secret in ("SECRET-BEARER-TOKEN", "SECRET-COOKIE-VALUE", "SECRET-BODY-VALUE"):
        assert secret not in output  # ... without its credentials or body


async def test_successful_health_probes_are_not_logged(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    for path in ("/health/live", "/health", "/health/ready"):
        assert (await client.get(path)).status_code == 200
    await client.get("/health/nope")
    await client.get("/_test/items/1")

    routes = [(line["route"], line["status"]) for line in access_lines(log_stream)]
    assert routes == [("<unmatched>", 404), ("/_test/items/{item_id}", 200)]


async def test_every_line_in_a_request_carries_its_request_id(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/_test/log")

    request_id = response.headers["x-request-id"]
    lines = records(log_stream)
    events = {line["event"]: line for line in lines}
    assert events["structlog_line"]["request_id"] == request_id
    assert events["stdlib line formatted"]["request_id"] == request_id
    assert events["stdlib line formatted"]["logger"] == "some.library"
    assert all(line["request_id"] == request_id for line in lines)


@pytest.mark.parametrize("settings_overrides", [{"allowed_hosts": ["*"]}])
async def test_wildcard_host_allows_any(client: httpx.AsyncClient) -> None:
    response = await client.get("/info", headers={"Host": "anything.example.org"})

    assert response.status_code == 200


@pytest.mark.parametrize("pattern", ["api.*.com", "*example.com", "**.example.com"])
def test_misplaced_host_wildcard_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="wildcards"):
        TrustedHostMiddleware(FastAPI(), allowed_hosts=[pattern])


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/openapi.json", "/openapi.json"),
        ("/docs/assets/swagger-ui.css", "/docs/assets/{path}"),
        ("/docs", "/docs"),
    ],
)
async def test_access_log_names_plain_routes_and_mounts(
    client: httpx.AsyncClient, log_stream: io.StringIO, path: str, route: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    (line,) = access_lines(log_stream)
    assert line["route"] == route
