"""`slipway serve --server hypercorn|granian`, run for real.

Each server runs two workers on a free loopback port with a throwaway SQLite database and
must: answer /health/ready and an API call; run the worker count it was given; leave
X-Forwarded-* to the app (which trusts only FORWARDED_ALLOW_IPS); and stop gracefully on
SIGTERM, letting a short in-flight request finish while a long one is cut at
GRACEFUL_TIMEOUT. Hypercorn also serves TLS with a fresh self-signed certificate and must
negotiate HTTP/2 by ALPN with httpx's http2 client (and still speak HTTP/1.1).
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.nginx_support import TlsFiles, make_self_signed
from tests.integration.conftest import (
    SLIPWAY,
    SlipwayServer,
    run_slipway,
    slipway_env,
    start_server,
)
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVERS = ("hypercorn", "granian")
WORKERS = 2
GRACEFUL_TIMEOUT = 5
#: A peer address the app trusts for X-Forwarded-*; 127.0.0.1 (the default client) is not.
TRUSTED_PROXY = "127.0.0.2"
SPOOFED_CLIENT = "203.0.113.9"


def _env(tmp: Path) -> dict[str, str]:
    return slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY="asgi-servers-secret-" + "s" * 40,
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'app.db'}",
        FORWARDED_ALLOW_IPS=TRUSTED_PROXY,
        GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT),
    )


@pytest.fixture(scope="module", params=SERVERS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, SlipwayServer]]:
    name: str = request.param
    tmp = tmp_path_factory.mktemp(name)
    started = start_server(
        tmp,
        _env(tmp),
        args=["--server", name, "--workers", str(WORKERS)],
        ready_path="/health/ready",
        log_path=tmp / f"{name}.log",
    )
    try:
        yield name, started
    finally:
        started.process.close()


def _access_lines(server: SlipwayServer, request_id: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while True:
        lines = [
            record
            for line in server.log_lines()
            if line.startswith("{")
            and (record := json.loads(line)).get("request_id") == request_id
            and record.get("event") == "request"
        ]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    """Worker processes of a server: its children, without multiprocessing's helper."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = []
    for child in map(int, children):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"resource_tracker" not in cmdline:
            workers.append(child)
    return workers


def test_ready_and_api(server: tuple[str, SlipwayServer]) -> None:
    _, app = server
    ready = httpx.get(app.url("/health/ready"), timeout=10)
    products = httpx.get(app.url("/api/v1/products"), timeout=10)

    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ok"
    assert ready.headers["x-request-id"]
    assert products.status_code == 200, products.text
    assert products.json()["items"] == []
    assert products.headers["content-type"] == "application/json"


def test_runs_the_given_worker_count(server: tuple[str, SlipwayServer]) -> None:
    _, app = server
    workers = _children(app.process.pid)
    assert len(workers) == WORKERS, workers

    answered: set[int] = set()
    for _ in range(60):  # a fresh connection each time: the kernel spreads them
        answered.add(httpx.get(app.url("/_test/slow?ms=0"), timeout=10).json()["pid"])
        if len(answered) == WORKERS:
            break
    assert answered == set(workers)


@pytest.mark.parametrize(
    ("peer", "expected_client"),
    [("127.0.0.1", "127.0.0.1"), (TRUSTED_PROXY, SPOOFED_CLIENT)],
    ids=["untrusted-peer", "trusted-proxy"],
)
def test_forwarded_headers_are_resolved_by_the_app_only(
    server: tuple[str, SlipwayServer], peer: str, expected_client: str
) -> None:
    # A server that rewrote the client address itself (uvicorn's default trusts 127.0.0.1)
    # would report the spoofed address for the untrusted peer.
    _, app = server
    request_id = f"fwd-{uuid.uuid4().hex}"
    transport = httpx.HTTPTransport(local_address=peer)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.get(
            app.url("/info"),
            headers={
                "X-Request-ID": request_id,
                "X-Forwarded-For": SPOOFED_CLIENT,
                "X-Forwarded-Proto": "https",
            },
        )

    assert response.status_code == 200
    (line,) = _access_lines(app, request_id)
    assert line["client_ip"] == expected_client


def test_sigterm_drains_then_stops_within_the_graceful_timeout(
    server: tuple[str, SlipwayServer],
) -> None:
    # Last in this module: it stops the module's server.
    name, app = server
    results: dict[str, int | str] = {}

    def call(label: str, ms: int) -> None:
        try:
            results[label] = httpx.get(app.url(f"/_test/slow?ms={ms}"), timeout=60).status_code
        except httpx.HTTPError as error:
            results[label] = type(error).__name__

    threads = [
        threading.Thread(target=call, args=("short", 1_500)),
        threading.Thread(target=call, args=("long", 30_000)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # both requests are in flight
    started = time.monotonic()
    app.process.send_signal(signal.SIGTERM)
    code = app.process.wait(timeout=GRACEFUL_TIMEOUT + 15)
    stopped_after = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=30)

    assert code in (0, -signal.SIGTERM), (code, app.process.log_tail())
    assert results["short"] == 200, (name, results)
    assert results["long"] != 200, "cut at GRACEFUL_TIMEOUT, never waited for"
    assert stopped_after < GRACEFUL_TIMEOUT + 5, stopped_after
    assert "services_closed" in app.process.log_text(), "the lifespan shutdown ran"


# --- Hypercorn over TLS: HTTP/2 by ALPN ---------------------------------------------------


def _start_tls_server(tmp: Path, tls: TlsFiles) -> tuple[ManagedProcess, int]:
    env = _env(tmp)
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process = ManagedProcess(
            [
                SLIPWAY,
                "serve",
                "--server",
                "hypercorn",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--certfile",
                str(tls.cert),
                "--keyfile",
                str(tls.key),
            ],
            name="slipway-hypercorn-tls",
            env=env,
            inherit_env=False,
            cwd=tmp,
            log_path=tmp / f"hypercorn-tls.{attempt}.log",
        )
        process.start()
        try:
            process.wait_for_port(port)
        except Exception:
            process.close()
            if "address already in use" not in process.log_text().lower():
                raise
            continue
        return process, port
    raise RuntimeError("hypercorn: no free port")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsFiles, int]]:
    tmp = tmp_path_factory.mktemp("hypercorn-tls")
    tls = make_self_signed(tmp / "tls")
    process, port = _start_tls_server(tmp, tls)
    try:
        yield tls, port
    finally:
        process.close()


def _tls_client(tls: TlsFiles, *, http2: bool) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(tls.cert))
    return httpx.Client(verify=context, http1=not http2, http2=http2, timeout=10)


def test_hypercorn_negotiates_http2_over_tls(tls_server: tuple[TlsFiles, int]) -> None:
    tls, port = tls_server
    with _tls_client(tls, http2=True) as client:
        ready = client.get(f"https://{LOOPBACK}:{port}/health/ready")
        products = client.get(f"https://{LOOPBACK}:{port}/api/v1/products")

    assert ready.status_code == 200, ready.text
    assert ready.http_version == "HTTP/2"
    assert products.status_code == 200
    assert products.http_version == "HTTP/2"


def test_hypercorn_still_serves_http11_over_tls(tls_server: tuple[TlsFiles, int]) -> None:
    tls, port = tls_server
    with _tls_client(tls, http2=False) as client:
        response = client.get(f"https://{LOOPBACK}:{port}/health/ready")

    assert response.status_code == 200
    assert response.http_version == "HTTP/1.1"


def test_alpn_offers_h2_first(tls_server: tuple[TlsFiles, int]) -> None:
    import socket

    tls, port = tls_server
    context = ssl.create_default_context(cafile=str(tls.cert))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((LOOPBACK, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls_socket,
    ):
        assert tls_socket.selected_alpn_protocol() == "h2"


# --- the command line -------------------------------------------------------------------


def test_tls_options_are_refused_for_servers_behind_a_proxy(tmp_path: Path) -> None:
    tls = make_self_signed(tmp_path / "tls")
    result = run_slipway(
        [
            "serve",
            "--server",
            "uvicorn",
            "--certfile",
            str(tls.cert),
            "--keyfile",
            str(tls.key),
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
    )

    assert result.returncode == 2
    assert "--server hypercorn or granian" in result.stderr
