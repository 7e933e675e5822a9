"""Sentry (scrubbing, request_id, delivery over the real HTTP transport), OpenTelemetry
tracing (server span, database child span, trace ids in the log lines) and the development
profiler.

Sentry and OpenTelemetry patch libraries process-wide, so the end-to-end checks run them in
a child process (a real `slipway serve`, or a short script) instead of this test process.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from slipway.app import create_app
from slipway.platform.context import request_id_var
from slipway.platform.observability import sentry
from slipway.platform.observability.tracing import add_trace_ids, otlp_traces_endpoint
from slipway.platform.settings import UnsafeSettingsError
from tests.conftest import TEST_SECRET, make_settings
from tests.integration.conftest import SlipwayServer, slipway_env, start_server
from tests.support.ports import LOOPBACK, wait_until

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


# --- a stand-in for Sentry's ingest ---------------------------------------------------------


class SentryIngest:
    """Accepts envelopes on http://key@127.0.0.1:PORT/1 like Sentry's ingest does."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                with ingest._lock:
                    ingest.bodies.append(raw)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey@{LOOPBACK}:{self.port}/1"

    def raw(self) -> str:
        with self._lock:
            return b"\n".join(self.bodies).decode("utf-8", errors="replace")

    def items(self, item_type: str) -> list[dict[str, Any]]:
        """Every envelope item of `item_type` ("event", "transaction", ...) received."""
        found = []
        with self._lock:
            bodies = list(self.bodies)
        for body in bodies:
            lines = body.split(b"\n")
            index = 1  # line 0 is the envelope header
            while index < len(lines):
                if not lines[index].strip():
                    index += 1
                    continue
                header = json.loads(lines[index])
                payload = lines[index + 1] if index + 1 < len(lines) else b""
                if header.get("type") == item_type:
                    found.append(json.loads(payload))
                index += 2
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def sentry_ingest() -> Iterator[SentryIngest]:
    ingest = SentryIngest()
    yield ingest
    ingest.close()


# --- Sentry ---------------------------------------------------------------------------------


def test_scrub_removes_secrets_by_key_and_by_shape() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXZhbHVl"
    event = {
        "request": {
            "headers": {
                "Authorization": "Bearer abc.def",
                "Cookie": "refresh_token=rt-secret",
                "Idempotency-Key": "idem-secret",
                "User-Agent": "curl/8",
            },
            "query_string": "page=2&access_token=qs-secret&q=tea",
            "data": {"username": "ann", "password": "pw-secret", "nested": [{"new_password": "x"}]},
        },
        "extra": {"note": f"token was {jwt}", "raw": '{"refresh_token": "rt-json"}'},
        "breadcrumbs": {"values": [{"message": "LoginRequest(username='ann', password='pw2')"}]},
        "exception": {"values": [{"value": "auth failed for header Bearer live-bearer-1"}]},
        "headers_list": [["authorization", "Basic dXNlcjpwYXNz"], ["accept", "json"]],
    }

    scrubbed = sentry.scrub(event)
    text = json.dumps(scrubbed)

    for secret in (
        "abc.def", "rt-secret", "idem-secret", "qs-secret", "pw-secret", jwt, "rt-json", "pw2",
        "live-bearer-1", "dXNlcjpwYXNz",
    ):  # fmt: skip
        assert secret not in text, secret
    assert scrubbed["request"]["headers"]["User-Agent"] == "curl/8"
    assert scrubbed["request"]["data"]["username"] == "ann"
    assert "page=2" in scrubbed["request"]["query_string"]
    assert "q=tea" in scrubbed["request"]["query_string"]
    assert scrubbed["headers_list"][1] == ["accept", "json"]


def test_before_send_tags_the_request_id() -> None:
    token = request_id_var.set("req-12345678")
    try:
        event = sentry.before_send({"tags": {"area": "orders"}, "message": "x"}, {})
    finally:
        request_id_var.reset(token)
    assert event["tags"] == {"area": "orders", "request_id": "req-12345678"}
    assert "request_id" not in sentry.before_send({"message": "outside a request"}, {}).get(
        "tags", {}
    )


def test_sentry_options_follow_the_settings() -> None:
    settings = make_settings(
        sentry_dsn="https://public@errors.example.com/1",
        git_sha="abc1234",
        sentry_traces_sample_rate=0.25,
        sentry_profiles_sample_rate=0.1,
    )
    options = sentry.sentry_options(settings)

    assert options["send_default_pii"] is False
    assert options["release"] == f"{settings.app_version}+abc1234"
    assert options["environment"] == "testing"
    assert options["traces_sample_rate"] == 0.25
    assert options["profiles_sample_rate"] == 0.1
    assert options["max_request_body_size"] == "never"
    assert options["include_local_variables"] is False
    names = {type(integration).__name__ for integration in options["integrations"]}
    assert {"FastApiIntegration", "SqlalchemyIntegration", "CeleryIntegration"} <= names
    assert sentry.init_sentry(make_settings()) is False  # no DSN: nothing starts
    with pytest.raises(ValidationError):
        make_settings(sentry_traces_sample_rate=1.5)


@pytest.fixture
def sentry_server(tmp_path: Path, sentry_ingest: SentryIngest) -> Iterator[SlipwayServer]:
    """`slipway serve` reporting to the stand-in ingest; stopped by PID afterwards."""
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'sentry.db'}",
        SENTRY_DSN=sentry_ingest.dsn,
        GIT_SHA="abc1234",
    )
    server = start_server(tmp_path, env)
    yield server
    server.process.close()


@pytest.mark.integration
def test_forced_500_reaches_sentry_with_request_id_and_without_secrets(
    sentry_server: SlipwayServer, sentry_ingest: SentryIngest
) -> None:
    server = sentry_server
    secrets = {
        "bearer": "bearer-" + uuid.uuid4().hex,
        "cookie": "cookie-" + uuid.uuid4().hex,
        "idempotency": "idem-" + uuid.uuid4().hex,
        "query_token": "qtoken-" + uuid.uuid4().hex,
        "query_password": "qpass-" + uuid.uuid4().hex,
    }
    request_id = "sentry-probe-" + uuid.uuid4().hex[:12]

    response = httpx.get(
        server.url("/_test/observability/boom"),
        params={"token": secrets["query_token"], "password": secrets["query_password"]},
        headers={
            "Authorization": f"Bearer {secrets['bearer']}",
            "Cookie": f"refresh_token={secrets['cookie']}",
            "Idempotency-Key": secrets["idempotency"],
            "X-Request-ID": request_id,
        },
        timeout=10,
    )

    assert response.status_code == 500
    assert response.headers["x-request-id"] == request_id
    wait_until(lambda: bool(sentry_ingest.items("event")), timeout=20, what="a Sentry event")
    time.sleep(0.5)  # anything else the SDK sends for this error
    (event, *_) = [e for e in sentry_ingest.items("event") if e.get("level") == "error"]
    assert event["tags"]["request_id"] == request_id
    assert event["release"] == f"{make_settings().app_version}+abc1234"
    assert event["environment"] == "testing"
    assert "ForcedError" in json.dumps(event)
    raw = sentry_ingest.raw()
    for name, secret in secrets.items():
        assert secret not in raw, name


# --- tracing --------------------------------------------------------------------------------

_TRACING_SCRIPT = r"""
import asyncio, json, os, sys
os.environ["SECRETS_DIR"] = "/nonexistent-slipway-secrets"
import httpx
from asgi_lifespan import LifespanManager
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id
from slipway.app import create_app
from slipway.catalog.models import Product
from slipway.platform.db.migrate import upgrade
from slipway.platform.observability.tracing import init_tracing
from slipway.platform.settings import Settings

settings = Settings(
    _env_file=None, environment="testing", secret_key=sys.argv[2], log_format="json",
    database_url=sys.argv[1], otel_enabled=True,
)
upgrade(settings)
exporter = InMemorySpanExporter()
init_tracing(settings, span_processor=SimpleSpanProcessor(exporter))
app = create_app(settings)

async def main():
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
    ) as http:
        async with app.state.services.session_factory() as session, session.begin():
            session.add(Product(sku="TR-1", name="Tea", price_minor=450, currency="EUR"))
        await http.get("/health/live")
        await http.get("/metrics")
        exporter.clear()
        print("MARK", flush=True)
        response = await http.get("/api/v1/products/1")
        print("MARK", flush=True)
        assert response.status_code == 200, response.text
        await http.get("/health/ready")
        await http.get("/metrics")
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace_id": format_trace_id(s.context.trace_id),
            "span_id": format_span_id(s.context.span_id),
            "parent": format_span_id(s.parent.span_id) if s.parent else None,
            "attributes": {k: str(v) for k, v in s.attributes.items()},
        }
        for s in exporter.get_finished_spans()
    ]
    result = {"request_id": response.headers["x-request-id"], "spans": spans}
    print("RESULT " + json.dumps(result), file=sys.stderr)

asyncio.run(main())
"""


def test_a_product_read_is_one_trace_with_a_database_span_and_traced_log_lines(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _TRACING_SCRIPT,
            f"sqlite+aiosqlite:///{tmp_path / 't.db'}",
            TEST_SECRET,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("RESULT ")]
    outcome = json.loads(line.removeprefix("RESULT "))
    spans = outcome["spans"]
    by_id = {span["span_id"]: span for span in spans}

    servers = [span for span in spans if span["kind"] == "SERVER"]
    assert len(servers) == 1, spans  # health and metrics are excluded
    server = servers[0]
    assert "/api/v1/products/1" in json.dumps(server["attributes"])
    database = [
        span
        for span in spans
        if span["kind"] == "CLIENT" and any(key.startswith("db.") for key in span["attributes"])
    ]
    assert database, spans
    # Readiness probes and the metrics refresher run SQL outside any request: no traces.
    assert {span["trace_id"] for span in spans} == {server["trace_id"]}
    for span in database:
        assert span["trace_id"] == server["trace_id"]
        ancestor = span
        while ancestor["parent"] is not None and ancestor["span_id"] != server["span_id"]:
            ancestor = by_id[ancestor["parent"]]
        assert ancestor["span_id"] == server["span_id"], "not a child of the server span"

    # Every log line of that request carries the trace id (the access line included).
    _, inside, _ = result.stdout.split("MARK\n")
    lines = [orjson.loads(text) for text in inside.splitlines() if text.startswith("{")]
    request_lines = [entry for entry in lines if entry.get("request_id") == outcome["request_id"]]
    assert any(entry["event"] == "request" for entry in request_lines), inside
    for entry in request_lines:
        assert entry.get("trace_id") == server["trace_id"], entry
        assert len(entry.get("span_id", "")) == 16


def test_trace_ids_are_added_only_inside_a_span() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert "trace_id" not in add_trace_ids(None, "info", {"event": "outside"})

    with tracer.start_as_current_span("work") as span:
        inside = add_trace_ids(None, "info", {"event": "inside"})

    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")


def test_otlp_endpoint_is_a_base_url() -> None:
    assert otlp_traces_endpoint(None) is None
    assert otlp_traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert otlp_traces_endpoint("http://collector:4318/v1/traces") == (
        "http://collector:4318/v1/traces"
    )


# --- profiler -------------------------------------------------------------------------------


async def test_profiler_returns_a_call_tree_on_request(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", profiler_enabled=True
    )
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as http,
    ):
        plain = await http.get("/_test/observability/pid")
        profiled = await http.get("/_test/observability/pid", params={"profile": "1"})

    assert plain.headers["content-type"] == "application/json"
    assert profiled.status_code == 200
    assert profiled.headers["content-type"].startswith("text/html")
    assert profiled.headers["x-profiled-status"] == "200"
    assert "pyinstrument" in profiled.text.lower()


def test_profiler_is_refused_in_production_and_ignored_in_staging() -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(
            environment="production",
            database_url="postgresql+asyncpg://app@db/app",
            redis_url="redis://redis:6379/0",
            profiler_enabled=True,
        )
    unsafe = refused.value.errors()[0]["ctx"]["error"]
    assert isinstance(unsafe, UnsafeSettingsError)
    assert any("PROFILER_ENABLED" in problem for problem in unsafe.problems)

    staging = create_app(make_settings(environment="staging", profiler_enabled=True))
    assert "ProfilerMiddleware" not in {m.cls.__name__ for m in staging.user_middleware}  # type: ignore[attr-defined]
