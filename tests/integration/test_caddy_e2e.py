"""The repository's Caddyfile, run for real in front of two running app instances.

Caddy (Debian's binary, as a foreground child) serves HTTPS with its local CA (`tls
internal`, the file's local mode) on free loopback ports, its state in a temporary
directory and its admin API off, and proxies to two `slipway serve` processes sharing one
SQLite database, which trust X-Forwarded-* from 127.0.0.1 only. Clients bind to other
loopback addresses (127.0.0.2, ...) so the address Caddy sees differs from Caddy's own.
The last test stops one instance: the health checks must route around it.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.deploy.caddy_support import (
    CaddyDirs,
    caddy_argv,
    caddy_binary,
    caddy_dirs,
    caddy_env,
    render_caddyfile,
)
from tests.integration.conftest import SlipwayServer, run_slipway, slipway_env, start_server
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEST_SECRET = "caddy-e2e-secret-" + "c" * 40
ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "correct horse battery staple 42"
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
STATIC_CSS = "body { color: #654321; }\n" * 200
#: The app's close code for a socket that never authenticated (platform/events/router.py).
CLOSE_UNAUTHENTICATED = 4401


@dataclass
class Stack:
    caddy: ManagedProcess
    apps: list[SlipwayServer]
    http_port: int
    https_port: int
    dirs: CaddyDirs

    def url(self, path: str) -> str:
        return f"https://{LOOPBACK}:{self.https_port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.dirs.local_ca))

    def client(self, local_address: str | None = None, *, http2: bool = False) -> httpx.Client:
        """A client that trusts Caddy's local CA and connects from `local_address`."""
        transport = httpx.HTTPTransport(
            verify=self.ssl_context(), local_address=local_address, http2=http2
        )
        return httpx.Client(transport=transport, timeout=10.0)

    def app_log_for(self, request_id: str) -> list[dict[str, object]]:
        def read() -> list[dict[str, object]]:
            return [
                record
                for app in self.apps
                for line in app.log_lines()
                if line.startswith("{")
                and (record := json.loads(line)).get("request_id") == request_id
            ]

        return _poll(read)

    def access_log(self) -> list[dict[str, object]]:
        records = []
        for line in self.caddy.log_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if str(record.get("logger", "")).startswith("http.log.access"):
                    records.append(record)
        return records


def _poll(read: Callable[[], list[dict[str, object]]]) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5.0
    while True:
        lines = read()
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _handshake_ok(port: int, dirs: CaddyDirs) -> bool:
    if not dirs.local_ca.is_file():
        return False
    context = ssl.create_default_context(cafile=str(dirs.local_ca))
    try:
        with (
            socket.create_connection((LOOPBACK, port), timeout=2) as raw,
            context.wrap_socket(raw, server_hostname=LOOPBACK),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def _start_caddy(tmp: Path, upstreams: list[str], static_root: Path) -> Stack:
    binary = caddy_binary()
    caddyfile = render_caddyfile(tmp / "conf")
    dirs = caddy_dirs(tmp / "caddy")
    for attempt in range(PORT_ATTEMPTS):
        http_port, https_port = free_port(), free_port()
        env = caddy_env(
            dirs,
            upstreams=upstreams,
            http_port=http_port,
            https_port=https_port,
            static_root=static_root,
        )
        process = ManagedProcess(
            caddy_argv(binary, "run", caddyfile),
            name="caddy",
            env=env,
            inherit_env=False,
            cwd=tmp,
            log_path=tmp / f"caddy-{attempt}.log",
        )
        process.start()
        try:
            process.wait_for_port(https_port)
            process.wait_for_port(http_port)
            # Caddy writes its local CA at startup, then issues the site certificate in the
            # background: ready once a verified handshake succeeds.
            process.wait_until(partial(_handshake_ok, https_port, dirs), "caddy's certificate")
        except Exception:
            process.close()
            if "address already in use" not in process.log_text().lower():
                raise
            continue
        return Stack(process, [], http_port, https_port, dirs)
    raise RuntimeError("caddy: no free ports")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("caddy-e2e")
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'shared.db'}",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        SLIPWAY_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    apps: list[SlipwayServer] = []
    caddy: Stack | None = None
    try:
        for name in ("app-a", "app-b"):  # one after the other: the first migrates
            apps.append(start_server(tmp, env, log_path=tmp / f"{name}.log"))
        created = run_slipway(["users", "create-admin", "--email", ADMIN_EMAIL], cwd=tmp, env=env)
        assert created.returncode == 0, created.stderr
        static_root = tmp / "static"
        static_root.mkdir()
        (static_root / "app.css").write_text(STATIC_CSS)
        caddy = _start_caddy(tmp, [f"{LOOPBACK}:{app.port}" for app in apps], static_root)
        caddy.apps = apps
        yield caddy
    finally:
        if caddy is not None:
            caddy.caddy.close()
        for app in apps:
            app.process.close()


def test_https_answers_from_both_instances_over_http2(stack: Stack) -> None:
    with stack.client("127.0.0.5", http2=True) as client:
        ready = client.get(stack.url("/health/ready"))
        pids = {client.get(stack.url("/_test/slow?ms=0")).json()["pid"] for _ in range(12)}

    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert ready.http_version == "HTTP/2"
    assert len(pids) == 2, "least_conn should spread requests over both instances"


def test_http_redirects_to_https(stack: Stack) -> None:
    response = httpx.get(
        f"http://{LOOPBACK}:{stack.http_port}/info?probe=1", follow_redirects=False, timeout=10
    )

    assert response.status_code == 308
    assert response.headers["location"].startswith(f"https://{LOOPBACK}")
    assert response.headers["location"].endswith("/info?probe=1")


@pytest.mark.parametrize(
    ("path", "status", "origin"),
    [
        ("/info", 200, "app"),
        ("/api/v1/does-not-exist", 404, "app"),
        ("/metrics", 403, "caddy"),
        ("/static/app.css", 200, "caddy"),
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
    assert "server" not in response.headers
    assert ("x-request-id" in response.headers) == (origin == "app")


def test_static_files_are_cached_and_compressed(stack: Stack) -> None:
    with stack.client() as client:
        response = client.get(stack.url("/static/app.css"), headers={"Accept-Encoding": "gzip"})
        missing = client.get(stack.url("/static/missing.css"))

    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=604800"
    assert response.headers["content-type"].startswith("text/css")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == STATIC_CSS
    assert missing.status_code == 404


def test_app_logs_the_client_address_not_caddy(stack: Stack) -> None:
    request_id = f"client-ip-{uuid.uuid4().hex}"
    with stack.client("127.0.0.2") as client:
        response = client.get(
            stack.url("/info"),
            # A spoofed hop: Caddy replaces X-Forwarded-For with the peer it sees.
            headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.9"},
        )

    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    (line,) = [r for r in stack.app_log_for(request_id) if r.get("event") == "request"]
    assert line["client_ip"] == "127.0.0.2"


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


def test_websocket_auth_failure_close_code_passes_through(stack: Stack) -> None:
    with ws_connect(
        f"wss://{LOOPBACK}:{stack.https_port}/ws/events",
        ssl=stack.ssl_context(),
        subprotocols=["slipway.events.v1"],  # type: ignore[list-item]
        open_timeout=10,
        close_timeout=5,
    ) as ws:
        ws.send(json.dumps({"type": "auth", "token": "not-a-token"}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_UNAUTHENTICATED


def test_health_is_not_logged(stack: Stack) -> None:
    request_id = f"after-health-{uuid.uuid4().hex}"
    with stack.client("127.0.0.8") as client:
        statuses = {client.get(stack.url("/health")).status_code for _ in range(20)}
        info = client.get(stack.url("/info"), headers={"X-Request-ID": request_id})

    assert statuses == {200}
    assert info.status_code == 200

    def logged_info() -> list[dict[str, object]]:
        return [
            r
            for r in stack.access_log()
            if dict(r.get("request", {})).get("uri") == "/info"  # type: ignore[call-overload]
        ]

    assert _poll(logged_info), "the access log is written"
    uris = [str(dict(r["request"]).get("uri")) for r in stack.access_log()]  # type: ignore[call-overload]
    assert not [uri for uri in uris if uri.startswith("/health")]


def test_traffic_avoids_a_stopped_instance(stack: Stack) -> None:
    # Last in this module: it stops one of the two instances.
    survivor, stopped = stack.apps
    stopped.process.stop(timeout=30)

    with stack.client("127.0.0.9") as client:
        responses = [client.get(stack.url("/_test/slow?ms=0")) for _ in range(12)]

    assert [r.status_code for r in responses] == [200] * 12
    assert {r.json()["pid"] for r in responses} == {survivor.process.pid}
