"""The repository's Nginx config, run for real in front of two running app instances.

Nginx (the Debian binary, as a foreground child with its own prefix) terminates TLS with a
fresh self-signed certificate on free loopback ports and proxies to two `slipway serve`
processes sharing one SQLite database, which trust X-Forwarded-* from 127.0.0.1 only.
Clients bind to other loopback addresses (127.0.0.2, ...) so the address Nginx sees differs
from Nginx's own.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.deploy.nginx_support import (
    TlsFiles,
    make_self_signed,
    nginx_binary,
    nginx_version,
    render_nginx,
)
from tests.integration.conftest import SlipwayServer, run_slipway, slipway_env, start_server
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEST_SECRET = "nginx-e2e-secret-" + "n" * 40
ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "correct horse battery staple 42"
#: What Nginx guarantees on every response (the app sends the same set itself).
SECURITY_HEADERS = (
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "content-security-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "permissions-policy",
)
STATIC_CSS = "body { color: #123456; }\n" * 200  # > gzip_min_length


@dataclass
class Stack:
    nginx: ManagedProcess
    apps: list[SlipwayServer]
    http_port: int
    https_port: int
    tls: TlsFiles

    def url(self, path: str) -> str:
        return f"https://{LOOPBACK}:{self.https_port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.cert))

    def client(self, local_address: str | None = None) -> httpx.Client:
        """A client that verifies the test CA and connects from `local_address`."""
        transport = httpx.HTTPTransport(verify=self.ssl_context(), local_address=local_address)
        return httpx.Client(transport=transport, timeout=10.0)

    def app_log(self) -> list[dict[str, object]]:
        records: list[dict[str, object]] = []
        for app in self.apps:
            for line in app.log_lines():
                if line.startswith("{"):
                    records.append(json.loads(line))
        return records

    def app_log_for(self, request_id: str) -> list[dict[str, object]]:
        return _poll(lambda: [r for r in self.app_log() if r.get("request_id") == request_id])

    def nginx_log_for(self, request_id: str) -> list[dict[str, object]]:
        return _poll(lambda: [r for r in self.nginx_log() if r.get("request_id") == request_id])

    def nginx_log(self) -> list[dict[str, object]]:
        lines = self.nginx.log_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _poll(read: Callable[[], list[dict[str, object]]]) -> list[dict[str, object]]:
    """Access lines are written just after the response is sent: poll briefly for them."""
    deadline = time.monotonic() + 5.0
    while True:
        lines = read()
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _start_nginx(tmp: Path, upstreams: list[str], tls: TlsFiles, static_root: Path) -> Stack:
    binary = nginx_binary()
    version = nginx_version(binary)
    for attempt in range(PORT_ATTEMPTS):
        http_port, https_port = free_port(), free_port()
        rendered = render_nginx(
            tmp / f"nginx-{attempt}",
            http_port=http_port,
            https_port=https_port,
            upstreams=upstreams,
            tls=tls,
            static_root=static_root,
            version=version,
        )
        process = ManagedProcess(
            rendered.argv(binary), name="nginx", log_path=tmp / f"nginx-{attempt}.log"
        )
        process.start()
        try:
            process.wait_for_port(https_port)
            process.wait_for_port(http_port)
        except Exception:
            process.close()
            if "address already in use" not in process.log_text().lower():
                raise
            continue
        return Stack(process, [], http_port, https_port, tls)
    raise RuntimeError("nginx: no free ports")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("nginx-e2e")
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'shared.db'}",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        SLIPWAY_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    apps: list[SlipwayServer] = []
    nginx: Stack | None = None
    try:
        # One after the other: the first migrates the shared database, the second finds it
        # at head.
        for name in ("app-a", "app-b"):
            apps.append(start_server(tmp, env, log_path=tmp / f"{name}.log"))
        created = run_slipway(["users", "create-admin", "--email", ADMIN_EMAIL], cwd=tmp, env=env)
        assert created.returncode == 0, created.stderr
        static_root = tmp / "static"
        static_root.mkdir()
        (static_root / "app.css").write_text(STATIC_CSS)
        tls = make_self_signed(tmp / "tls")
        nginx = _start_nginx(tmp, [f"{LOOPBACK}:{app.port}" for app in apps], tls, static_root)
        nginx.apps = apps
        yield nginx
    finally:
        if nginx is not None:
            nginx.nginx.close()
        for app in apps:
            app.process.close()


def test_https_answers_from_both_instances(stack: Stack) -> None:
    with stack.client("127.0.0.5") as client:
        ready = client.get(stack.url("/health/ready"))
        pids = {client.get(stack.url("/_test/slow?ms=0")).json()["pid"] for _ in range(12)}

    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert ready.http_version == "HTTP/1.1"
    assert len(pids) == 2, "least_conn should spread requests over both instances"


def test_http_redirects_to_https(stack: Stack) -> None:
    response = httpx.get(
        f"http://{LOOPBACK}:{stack.http_port}/info?probe=1", follow_redirects=False, timeout=10
    )

    assert response.status_code == 301
    assert response.headers["location"] == f"https://{LOOPBACK}/info?probe=1"


@pytest.mark.parametrize(
    ("version", "expected_cipher"),
    [(ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-"), (ssl.TLSVersion.TLSv1_3, "TLS_")],
)
def test_tls_12_and_13_with_forward_secret_aead_ciphers(
    stack: Stack, version: ssl.TLSVersion, expected_cipher: str
) -> None:
    context = stack.ssl_context()
    context.minimum_version = context.maximum_version = version
    with (
        httpx.Client(verify=context, timeout=10) as client,
        client.stream("GET", stack.url("/health")) as response,
    ):
        tls = response.extensions["network_stream"].get_extra_info("ssl_object")
        cipher, protocol, _ = tls.cipher()

    assert response.status_code == 200
    assert protocol == version.name.replace("v1_", "v1.")
    assert cipher.startswith(expected_cipher)
    assert "GCM" in cipher or "CHACHA20" in cipher


@pytest.mark.parametrize(
    ("path", "status", "origin"),
    [
        ("/info", 200, "app"),
        ("/api/v1/does-not-exist", 404, "app"),
        ("/metrics", 403, "nginx"),
        ("/static/app.css", 200, "nginx"),
    ],
)
def test_security_headers_present_exactly_once(
    stack: Stack, path: str, status: int, origin: str
) -> None:
    with stack.client("127.0.0.6") as client:
        response = client.get(stack.url(path))

    assert response.status_code == status
    for name in SECURITY_HEADERS:
        assert len(response.headers.get_list(name)) == 1, (name, response.headers)
    # Proxied responses come from the app (it echoes a request id); Nginx's own do not.
    assert ("x-request-id" in response.headers) == (origin == "app")


def test_static_files_are_cached_and_compressed(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get(stack.url("/static/app.css"), headers={"Accept-Encoding": "gzip"})
        missing = client.get(stack.url("/static/missing.css"))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=604800"
    assert response.headers["content-type"] == "text/css"
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == STATIC_CSS  # httpx decompresses
    assert missing.status_code == 404


def test_request_id_is_forwarded(stack: Stack) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    with stack.client() as client:
        response = client.get(stack.url("/info"), headers={"X-Request-ID": request_id})

    assert response.headers["x-request-id"] == request_id
    logged = stack.nginx_log_for(request_id)
    assert len(logged) == 1
    assert logged[0]["uri"] == "/info"


def test_app_logs_the_client_address_not_nginx(stack: Stack) -> None:
    request_id = f"client-ip-{uuid.uuid4().hex}"
    with stack.client("127.0.0.2") as client:
        response = client.get(
            stack.url("/info"),
            # A spoofed hop: Nginx overwrites X-Forwarded-For with the peer it sees.
            headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"},
        )
    assert response.status_code == 200

    lines = stack.app_log_for(request_id)
    assert len(lines) == 1, lines
    assert lines[0]["client_ip"] == "127.0.0.2"
    nginx_lines = stack.nginx_log_for(request_id)
    assert len(nginx_lines) == 1
    assert nginx_lines[0]["remote_addr"] == "127.0.0.2"


def test_metrics_are_refused_from_outside(stack: Stack) -> None:
    with stack.client() as client:
        for path in ("/metrics", "/metrics/", "/metrics?format=json"):
            assert client.get(stack.url(path)).status_code == 403


def test_websocket_through_the_proxy(stack: Stack) -> None:
    with stack.client("127.0.0.7") as client:
        login = client.post(
            stack.url("/api/v1/auth/login"),
            data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
        )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]

    with ws_connect(
        f"wss://{LOOPBACK}:{stack.https_port}/ws/events",
        ssl=stack.ssl_context(),
        subprotocols=["slipway.events.v1"],  # type: ignore[list-item]
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        assert ws.subprotocol == "slipway.events.v1"
        ws.send(json.dumps({"type": "auth", "token": token}))
        ready = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"type": "ping"}))
        pong = json.loads(ws.recv(timeout=10))

    assert ready["type"] == "ready"
    assert pong["type"] == "pong"


def test_auth_zone_rejects_a_burst(stack: Stack) -> None:
    # GET on the login route is a cheap 405 from the app: any 429 is Nginx's auth zone.
    with stack.client("127.0.0.3") as client:
        responses = [client.get(stack.url("/api/v1/auth/login")) for _ in range(15)]

    statuses = [r.status_code for r in responses]
    passed = [s for s in statuses if s != 429]
    assert set(passed) == {405}, statuses
    # rate=10r/m with burst=5: the first six pass, the rest are rejected at once.
    assert 6 <= len(passed) <= 7, statuses
    rejected = responses[-1]
    assert rejected.status_code == 429
    assert rejected.headers["retry-after"] == "60"
    assert rejected.json()["error"]["code"] == "rate_limited"
    assert rejected.json()["error"]["request_id"]
    # Another client address has its own allowance.
    with stack.client("127.0.0.4") as other:
        assert other.get(stack.url("/api/v1/auth/login")).status_code == 405


def test_health_is_neither_limited_nor_logged(stack: Stack) -> None:
    # Far more than the api zone's burst (40) plus its refill during the loop.
    request_id = f"after-health-{uuid.uuid4().hex}"
    with stack.client("127.0.0.8") as client:
        statuses = {client.get(stack.url("/health")).status_code for _ in range(120)}
        info = client.get(stack.url("/info"), headers={"X-Request-ID": request_id})

    assert statuses == {200}
    assert info.status_code == 200
    # Written after every /health request above: the log is complete up to here.
    assert stack.nginx_log_for(request_id)
    uris = [str(r["uri"]) for r in stack.nginx_log()]
    assert not [uri for uri in uris if uri.startswith("/health")]
