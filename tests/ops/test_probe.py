"""`slipway probe URL`: every check against a simulated deployment (each defect on its own),
then the real thing.

Real stacks: the production app (PostgreSQL, Redis) behind the repository's Nginx with a
self-signed certificate passes every check; direct TLS uvicorn instances of the same app, each
with one misconfiguration (docs on, no HSTS, metrics open to the probe's address, a CORS
configuration that reflects any origin), fail exactly that check.
"""

from __future__ import annotations

import itertools
import json
import secrets
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from slipway.ops.checks import Report, Status
from slipway.ops.probe import LOGIN_ATTEMPTS, ProbeConfig, ProbeContext, registry
from tests.deploy.nginx_support import TlsFiles, make_self_signed
from tests.integration.conftest import run_slipway, slipway_env, start_server
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess, PostgresService, RedisService

BASE = "https://api.example.test"
#: Everything but the TLS handshake, which needs a real socket (covered by the real stacks).
SIMULATED = [check_id for check_id in registry.ids if check_id != "tls.version"]

# --- a simulated deployment --------------------------------------------------------------


@dataclass
class FakeDeployment:
    """A well-configured deployment; each field breaks one thing."""

    hsts: str | None = "max-age=63072000; includeSubDomains"
    server: str | None = "nginx"
    extra_headers: dict[str, str] = field(default_factory=dict)
    drop_headers: tuple[str, ...] = ()
    http_listener: str = "redirect"  # or "refused", "serves"
    docs_exposed: tuple[str, ...] = ()
    metrics_status: int = 403
    cors: str = "none"  # or "reflect", "star", "star-credentials"
    error_body: str = '{"error":{"code":"not_found","message":"Not found."}}'
    error_status: int = 404
    ready: tuple[int, str] = (200, "ok")
    echo_request_id: bool = True
    mint_request_id: bool = True
    login_limit_after: int | None = 5
    logins: int = 0
    requests: list[httpx.Request] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        headers = {
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
            "referrer-policy": "no-referrer",
            "x-xss-protection": "0",
        }
        if self.hsts:
            headers["strict-transport-security"] = self.hsts
        if self.server:
            headers["server"] = self.server
        if self.mint_request_id:
            headers["x-request-id"] = uuid.uuid4().hex
        headers.update(self.extra_headers)
        for name in self.drop_headers:
            headers.pop(name, None)
        return headers

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.scheme == "http":
            if self.http_listener == "refused":
                raise httpx.ConnectError("connection refused", request=request)
            if self.http_listener == "redirect":
                location = str(request.url.copy_with(scheme="https"))
                return httpx.Response(301, headers={"location": location})
        headers = self.headers()
        path = request.url.path
        origin = request.headers.get("origin")
        if origin and self.cors != "none":
            headers["access-control-allow-origin"] = origin if self.cors == "reflect" else "*"
            if self.cors in ("reflect", "star-credentials"):
                headers["access-control-allow-credentials"] = "true"
        if path == "/health/ready":
            status, state = self.ready
            return httpx.Response(status, headers=headers, json={"status": state})
        if path == "/health/live":
            sent = request.headers.get("x-request-id")
            if sent and self.echo_request_id:
                headers["x-request-id"] = sent
            return httpx.Response(200, headers=headers, json={"status": "ok"})
        if path.lstrip("/") in self.docs_exposed:
            return httpx.Response(200, headers=headers, text="<html>docs</html>")
        if path == "/metrics":
            return httpx.Response(self.metrics_status, headers=headers, text="up 1\n")
        if path == "/api/v1/auth/login":
            self.logins += 1
            limited = self.login_limit_after is not None and self.logins > self.login_limit_after
            return httpx.Response(429 if limited else 401, headers=headers, json={})
        if request.method == "OPTIONS":
            return httpx.Response(400, headers=headers, json={"error": {}})
        if path == "/api/v1/products" and request.method == "GET":
            return httpx.Response(200, headers=headers, json={"items": []})
        return httpx.Response(self.error_status, headers=headers, text=self.error_body)


def probe_fake(deployment: FakeDeployment, *, base: str = BASE, max_requests: int = 30) -> Report:
    config = ProbeConfig.from_url(base, max_requests=max_requests)
    client = httpx.Client(transport=httpx.MockTransport(deployment), follow_redirects=False)
    with client:
        context = ProbeContext(config, client)
        results = registry.run(context, only=SIMULATED)
    return Report(tool="probe", target=base, results=results)


def not_passing(report: Report) -> dict[str, str]:
    return {r.id: r.status.value for r in report.results if r.status is not Status.PASS}


def test_a_well_configured_deployment_passes() -> None:
    deployment = FakeDeployment()

    report = probe_fake(deployment)

    assert not_passing(report) == {}, report.to_json()
    assert len(deployment.requests) <= 30
    assert report.by_id()["auth.rate_limit"].detail == "429 after 6 attempts"


DEFECTS: list[tuple[str, str, FakeDeployment]] = [
    ("tls.redirect", "fail", FakeDeployment(http_listener="serves")),
    ("tls.redirect", "warn", FakeDeployment(http_listener="refused")),
    ("tls.hsts", "fail", FakeDeployment(hsts=None)),
    ("tls.hsts", "warn", FakeDeployment(hsts="max-age=300")),
    ("headers.security", "fail", FakeDeployment(drop_headers=("x-content-type-options",))),
    ("headers.security", "fail", FakeDeployment(drop_headers=("content-security-policy",))),
    ("headers.security", "fail", FakeDeployment(drop_headers=("referrer-policy",))),
    (
        "headers.obsolete",
        "fail",
        FakeDeployment(extra_headers={"x-xss-protection": "1; mode=block"}),
    ),
    ("headers.obsolete", "fail", FakeDeployment(extra_headers={"x-powered-by": "FastAPI"})),
    ("headers.server", "fail", FakeDeployment(server="nginx/1.22.1")),
    ("request_id.echo", "fail", FakeDeployment(echo_request_id=False)),
    ("api.docs", "fail", FakeDeployment(docs_exposed=("openapi.json",))),
    ("metrics.public", "fail", FakeDeployment(metrics_status=200)),
    ("cors.reflection", "fail", FakeDeployment(cors="reflect")),
    ("cors.reflection", "fail", FakeDeployment(cors="star-credentials")),
    ("cors.reflection", "warn", FakeDeployment(cors="star")),
    (
        "errors.traceback",
        "fail",
        FakeDeployment(
            error_body='Traceback (most recent call last):\n  File "/app/x.py", line 3, in f'
        ),
    ),
    ("errors.traceback", "fail", FakeDeployment(error_status=500)),
    ("health.ready", "fail", FakeDeployment(ready=(503, "failing"))),
    ("health.ready", "warn", FakeDeployment(ready=(200, "degraded"))),
    ("auth.rate_limit", "fail", FakeDeployment(login_limit_after=None)),
    ("auth.rate_limit", "fail", FakeDeployment(login_limit_after=LOGIN_ATTEMPTS)),
]


@pytest.mark.parametrize(
    ("check_id", "status", "deployment"),
    [pytest.param(*row, id=f"{row[0]}-{row[1]}-{i}") for i, row in enumerate(DEFECTS)],
)
def test_each_defect_flags_exactly_its_check(
    check_id: str, status: str, deployment: FakeDeployment
) -> None:
    report = probe_fake(replace(deployment, requests=[]))

    assert not_passing(report) == {check_id: status}, report.to_json()
    assert report.exit_code == (1 if status == "fail" else 0)


def test_every_check_has_a_defect() -> None:
    assert {row[0] for row in DEFECTS} | {"tls.version"} == set(registry.ids)


def test_missing_request_ids_fail() -> None:
    report = probe_fake(FakeDeployment(mint_request_id=False, echo_request_id=False))

    assert not_passing(report) == {"request_id.echo": "fail"}
    assert "no X-Request-ID" in report.by_id()["request_id.echo"].detail


def test_the_request_budget_is_never_exceeded() -> None:
    deployment = FakeDeployment(login_limit_after=None)

    report = probe_fake(deployment, max_requests=12)

    assert len(deployment.requests) == 12
    assert "budget of 12 requests" in report.by_id()["auth.rate_limit"].detail


def test_a_plain_http_target_fails_the_transport_checks() -> None:
    report = probe_fake(FakeDeployment(http_listener="serves"), base="http://api.example.test")

    assert not_passing(report) == {"tls.redirect": "fail", "tls.hsts": "fail"}


def test_paths_are_joined_under_a_base_path() -> None:
    deployment = FakeDeployment()

    probe_fake(deployment, base=BASE + "/slipway")

    https_paths = {r.url.path for r in deployment.requests if r.url.scheme == "https"}
    assert https_paths
    assert all(path.startswith("/slipway/") for path in https_paths)


@pytest.mark.parametrize(
    ("url", "http_url"),
    [("ftp://example.com", None), ("https://", None), (BASE, "https://example.com")],
)
def test_bad_urls_are_refused(url: str, http_url: str | None) -> None:
    with pytest.raises(ValueError):
        ProbeConfig.from_url(url, http_url=http_url)


def test_cli_refuses_a_bad_url(tmp_path: Path) -> None:
    result = run_slipway(["probe", "ftp://example.com"], cwd=tmp_path)

    assert result.returncode == 2
    assert "not an http(s) URL" in result.stderr


# --- real stacks ---------------------------------------------------------------------------

SECRET = secrets.token_urlsafe(48)
METRICS_TOKEN = secrets.token_urlsafe(24)
_redis_db = itertools.count(2)


@pytest.fixture(scope="module")
def probe_database(postgres_server: PostgresService, pg_template: str) -> Iterator[str]:
    name = f"probe_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name, template=pg_template)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_self_signed(tmp_path_factory.mktemp("probe-tls"))


def production_env(database_url: str, redis: RedisService, **overrides: str) -> dict[str, str]:
    """A valid production configuration (each stack gets its own Redis database, so rate
    limit counters never carry over from one stack to the next)."""
    values = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis.url(next(_redis_db)),
        "ALLOWED_HOSTS": f"{LOOPBACK},localhost",
        "CORS_ORIGINS": "https://app.example.com",
        "FORWARDED_ALLOW_IPS": LOOPBACK,
        "PUBLIC_BASE_URL": "https://api.example.com",
        "METRICS_EXPOSURE": "token",
        "METRICS_TOKEN": METRICS_TOKEN,
        "LOG_FORMAT": "json",
    }
    values.update(overrides)
    return slipway_env(**values)


def run_probe_cli(url: str, cwd: Path, http_url: str) -> dict[str, Any]:
    result = run_slipway(
        ["probe", url, "--insecure", "--http-url", http_url, "--format", "json"],
        cwd=cwd,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(result.stdout)
    failing = [c["id"] for c in report["checks"] if c["status"] == "fail"]
    assert result.returncode == (1 if failing else 0), result.stdout + result.stderr
    return report


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {check["id"]: check["status"] for check in report["checks"]}


@pytest.mark.integration
@pytest.mark.slow
def test_production_behind_nginx_passes_every_check(
    tmp_path: Path,
    probe_database: str,
    redis_server: RedisService,
    tls: TlsFiles,
) -> None:
    from tests.integration.test_nginx_e2e import _start_nginx

    env = production_env(probe_database, redis_server)
    app = start_server(tmp_path, env, log_path=tmp_path / "app.log")
    stack = None
    try:
        static_root = tmp_path / "static"
        static_root.mkdir()
        stack = _start_nginx(tmp_path, [f"{LOOPBACK}:{app.port}"], tls, static_root)
        started = time.monotonic()

        report = run_probe_cli(
            f"https://{LOOPBACK}:{stack.https_port}",
            tmp_path,
            http_url=f"http://{LOOPBACK}:{stack.http_port}",
        )

        print(f"probe behind nginx: {time.monotonic() - started:.1f}s")
    finally:
        if stack is not None:
            stack.nginx.close()
        app.process.close()

    assert statuses(report) == dict.fromkeys(registry.ids, "pass"), json.dumps(report, indent=2)
    assert report["status"] == "pass"
    # The proxy answered what the app never saw.
    details = {check["id"]: check["detail"] for check in report["checks"]}
    assert details["metrics.public"] == "/metrics answered 403"
    assert details["headers.server"] == "Server: nginx"
    assert details["tls.version"].startswith(("TLSv1.2", "TLSv1.3"))


@dataclass
class DirectApp:
    """The app terminating TLS itself (uvicorn --ssl-*), without a proxy in front."""

    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"


def start_direct(cwd: Path, env: dict[str, str], tls: TlsFiles | None, name: str) -> DirectApp:
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        ssl_args = ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)] if tls else []
        process = ManagedProcess(
            [
                sys.executable, "-m", "uvicorn", "slipway.app:create_app", "--factory",
                "--host", LOOPBACK, "--port", str(port), "--no-server-header",
                "--no-access-log", *ssl_args,
            ],
            name=name,
            env=env,
            inherit_env=False,
            cwd=cwd,
            log_path=cwd / f"{name}.{attempt}.log",
        )  # fmt: skip
        process.start()
        live = f"{'https' if tls else 'http'}://{LOOPBACK}:{port}/health/live"
        try:
            process.wait_until(lambda url=live: _answers(url), what=f"{name} live")
        except Exception:
            process.close()
            if "address already in use" not in process.log_text().lower():
                raise
            continue
        return DirectApp(process, port)
    raise RuntimeError(f"{name}: no free port")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, verify=False, timeout=2).status_code in (200, 307)
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def http_redirector(
    tmp_path_factory: pytest.TempPathFactory, probe_database: str, redis_server: RedisService
) -> Iterator[str]:
    """The plain-HTTP side of the direct stacks: the app with HTTPS_REDIRECT=true."""
    cwd = tmp_path_factory.mktemp("redirector")
    env = production_env(probe_database, redis_server, HTTPS_REDIRECT="true")
    app = start_direct(cwd, env, None, "redirector")
    try:
        yield f"http://{LOOPBACK}:{app.port}"
    finally:
        app.process.close()


MISCONFIGURED: dict[str, tuple[str, dict[str, str]]] = {
    "docs enabled": (
        "api.docs",
        {"DOCS_ENABLED": "true", "ALLOW_DOCS_IN_PRODUCTION": "true"},
    ),
    "no HSTS": ("tls.hsts", {"HSTS_SECONDS": "0"}),
    # The default allowlist holds every private network, loopback included: from a client
    # that is "inside", the metrics are public.
    "public metrics": ("metrics.public", {"METRICS_EXPOSURE": "ip_allowlist"}),
    # Staging does not refuse '*'; Starlette answers a credentialed '*' by echoing the Origin.
    "reflecting CORS": ("cors.reflection", {"ENVIRONMENT": "staging", "CORS_ORIGINS": "*"}),
}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("variant", list(MISCONFIGURED))
def test_a_misconfigured_stack_fails_exactly_that_check(
    variant: str,
    tmp_path: Path,
    probe_database: str,
    redis_server: RedisService,
    tls: TlsFiles,
    http_redirector: str,
) -> None:
    check_id, overrides = MISCONFIGURED[variant]
    env = production_env(probe_database, redis_server, **overrides)
    app = start_direct(tmp_path, env, tls, "direct-app")
    try:
        report = run_probe_cli(app.url, tmp_path, http_url=http_redirector)
    finally:
        app.process.close()

    expected = dict.fromkeys(registry.ids, "pass") | {check_id: "fail"}
    assert statuses(report) == expected, json.dumps(report, indent=2)
