"""`slipway healthcheck`, run as Docker runs it: a child process, exit code 0 or 1."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import SLIPWAY, run_slipway, slipway_env
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import ManagedProcess

PRODUCTION_SECRET = "production-secret-" + "h" * 40


class _Probe(http.server.BaseHTTPRequestHandler):
    """Answers /health/ready with the server's `status`, after its `delay`."""

    def do_GET(self) -> None:
        server = self.server
        server.requests.append((self.path, self.headers.get("Host")))  # type: ignore[attr-defined]
        time.sleep(server.delay)  # type: ignore[attr-defined]
        status = server.status if self.path == "/health/ready" else 404  # type: ignore[attr-defined]
        body = b'{"status":"ok"}' if status == 200 else b'{"status":"failing"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def probe_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Probe)
    server.status = 200  # type: ignore[attr-defined]
    server.delay = 0.0  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _port(server: http.server.ThreadingHTTPServer) -> str:
    return str(server.server_address[1])


def test_ready_exits_zero_probing_port_from_environment(
    tmp_path: Path, probe_server: http.server.ThreadingHTTPServer
) -> None:
    result = run_slipway(
        ["healthcheck"], cwd=tmp_path, env=slipway_env(PORT=_port(probe_server), HOST="0.0.0.0")
    )

    assert result.returncode == 0, result.stderr
    assert "answered 200" in result.stdout
    # Loopback for a wildcard bind, and a Host header ALLOWED_HOSTS accepts in production.
    assert probe_server.requests == [("/health/ready", "localhost")]  # type: ignore[attr-defined]


def test_not_ready_exits_one(tmp_path: Path, probe_server: http.server.ThreadingHTTPServer) -> None:
    probe_server.status = 503  # type: ignore[attr-defined]

    result = run_slipway(["healthcheck"], cwd=tmp_path, env=slipway_env(PORT=_port(probe_server)))

    assert result.returncode == 1
    assert "answered 503" in result.stderr


def test_nothing_listening_exits_one(tmp_path: Path) -> None:
    result = run_slipway(["healthcheck"], cwd=tmp_path, env=slipway_env(PORT=str(free_port())))

    assert result.returncode == 1
    assert "unreachable" in result.stderr


def test_slow_answer_times_out(
    tmp_path: Path, probe_server: http.server.ThreadingHTTPServer
) -> None:
    probe_server.delay = 3.0  # type: ignore[attr-defined]
    url = f"http://{LOOPBACK}:{_port(probe_server)}/health/ready"

    started = time.monotonic()
    result = run_slipway(["healthcheck", "--url", url, "--timeout", "0.5"], cwd=tmp_path)

    assert result.returncode == 1
    assert "timed out" in result.stderr
    # Bounded by --timeout, not by the server (interpreter start-up aside).
    assert time.monotonic() - started < 2.9


def test_explicit_url_and_quiet(
    tmp_path: Path, probe_server: http.server.ThreadingHTTPServer
) -> None:
    url = f"http://{LOOPBACK}:{_port(probe_server)}/health/ready"

    result = run_slipway(["healthcheck", "--url", url, "--quiet"], cwd=tmp_path)

    assert result.returncode == 0
    assert result.stdout == ""
    assert probe_server.requests == [  # type: ignore[attr-defined]
        ("/health/ready", f"{LOOPBACK}:{_port(probe_server)}")
    ]


def test_non_http_url_is_refused(tmp_path: Path) -> None:
    result = run_slipway(["healthcheck", "--url", "file:///etc/passwd"], cwd=tmp_path)

    assert result.returncode == 1
    assert "not an http(s) URL" in result.stderr


@pytest.mark.integration
def test_against_a_production_server(tmp_path: Path) -> None:
    """ALLOWED_HOSTS lists only the public name and localhost, as the manifests do."""
    database = tmp_path / "prod.db"
    env = slipway_env(
        ENVIRONMENT="production",
        SECRET_KEY=PRODUCTION_SECRET,
        ALLOW_SQLITE_IN_PRODUCTION="true",
        ALLOW_EMBEDDED_JOBS_IN_PRODUCTION="true",
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        ALLOWED_HOSTS="api.example.com,localhost",
    )
    assert run_slipway(["migrate"], cwd=tmp_path, env=env).returncode == 0
    port = free_port()
    server = ManagedProcess(
        [SLIPWAY, "serve", "--host", LOOPBACK, "--port", str(port)],
        name="slipway-serve",
        env=env,
        inherit_env=False,
        cwd=tmp_path,
        log_path=tmp_path / "serve.log",
    )
    with server:
        server.wait_for_http(f"http://{LOOPBACK}:{port}/health/live")
        # The host list is enforced (the raw loopback address is not in it)...
        other = httpx.get(f"http://{LOOPBACK}:{port}/info", timeout=10)
        result = run_slipway(["healthcheck"], cwd=tmp_path, env={**env, "PORT": str(port)})

    assert other.status_code == 400
    # ...and the probe still passes.
    assert result.returncode == 0, result.stderr
