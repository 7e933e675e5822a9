"""`slipway probe URL`: a running deployment audited from outside, as an attacker sees it.

Bounded on purpose: at most `max_requests` requests (30 by default; about 23 are needed),
each with a timeout, no retries, no crawling. The login rate-limit check spends at most 10
of them on a made-up account, so probing a production system never locks anyone out.
"""

from __future__ import annotations

import functools
import re
import secrets
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx

from slipway.ops.checks import (
    CheckRegistry,
    Outcome,
    Report,
    Severity,
    failed,
    passed,
    warned,
)

HSTS_MIN_SECONDS = 15_552_000  # 180 days
LOGIN_ATTEMPTS = 10
LOGIN_PATH = "api/v1/auth/login"
READY_PATH = "health/ready"
ACCEPTABLE_TLS = ("TLSv1.2", "TLSv1.3")
#: What leaks from a stack trace or a framework's debug page.
_TRACEBACK_MARKERS = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|"
    r"\b(sqlalchemy|asyncpg|pydantic_core|starlette|uvicorn)\.[a-z_]+\.|"
    r"site-packages/|<title>[^<]*(Exception|Error) at /",
)
_OBSOLETE = (
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "public-key-pins",
    "expect-ct",
)


def _user_agent() -> str:
    try:
        return f"slipway-probe/{version('slipway')}"
    except PackageNotFoundError:  # a source tree without install
        return "slipway-probe"


class BudgetExhaustedError(RuntimeError):
    """The probe has sent `max_requests` requests."""


@dataclass(frozen=True)
class ProbeConfig:
    base_url: httpx.URL
    http_url: httpx.URL
    insecure: bool = False
    max_requests: int = 30
    timeout: float = 10.0

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        insecure: bool = False,
        max_requests: int = 30,
        http_url: str | None = None,
        timeout: float = 10.0,
    ) -> ProbeConfig:
        base = httpx.URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        if not base.path.endswith("/"):
            base = base.copy_with(path=base.path + "/")
        plain = httpx.URL(http_url) if http_url else base.copy_with(scheme="http", port=None)
        if plain.scheme != "http":
            raise ValueError(f"--http-url must be an http:// URL, got {http_url!r}")
        return cls(base, plain, insecure, max_requests, timeout)

    @property
    def is_https(self) -> bool:
        return self.base_url.scheme == "https"


@dataclass
class ProbeContext:
    config: ProbeConfig
    client: httpx.Client
    sent: int = 0
    #: Responses several checks look at, fetched once.
    _cache: dict[str, httpx.Response] = field(default_factory=dict)
    marker: str = field(default_factory=lambda: secrets.token_hex(6))

    def spend(self) -> None:
        if self.sent >= self.config.max_requests:
            raise BudgetExhaustedError
        self.sent += 1

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.spend()
        return self.client.request(method, str(self.config.base_url.join(path)), **kwargs)

    def shared(self, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if key not in self._cache:
            self._cache[key] = self.request(method, path, **kwargs)
        return self._cache[key]

    def ready(self) -> httpx.Response:
        return self.shared("ready", "GET", READY_PATH)

    def not_found(self) -> httpx.Response:
        return self.shared("404", "GET", f"api/v1/slipway-probe-{self.marker}")


registry: CheckRegistry[ProbeContext] = CheckRegistry()


def check(
    check_id: str, title: str, severity: Severity, fix: str
) -> Callable[[Callable[[ProbeContext], Outcome]], Callable[[ProbeContext], Outcome]]:
    """Register a probe check whose network errors become a failed result."""

    def register(function: Callable[[ProbeContext], Outcome]) -> Callable[[ProbeContext], Outcome]:
        @functools.wraps(function)
        def guarded(ctx: ProbeContext) -> Outcome:
            try:
                return function(ctx)
            except BudgetExhaustedError:
                return failed(
                    f"not checked: the budget of {ctx.config.max_requests} requests is spent"
                )
            except (httpx.HTTPError, OSError) as exc:
                return failed(f"request failed: {type(exc).__name__}: {exc}"[:300])

        registry.check(check_id, title, severity, fix)(guarded)
        return function

    return register


def _https_only(ctx: ProbeContext) -> Outcome | None:
    if not ctx.config.is_https:
        return failed(f"{ctx.config.base_url} is plain HTTP")
    return None


# --- transport -----------------------------------------------------------------------------


@check(
    "tls.redirect",
    "HTTP redirects to HTTPS",
    Severity.HIGH,
    "Answer every plain-HTTP request with a 301 to https:// (Nginx `return 301`).",
)
def redirect(ctx: ProbeContext) -> Outcome:
    if (refused := _https_only(ctx)) is not None:
        return refused
    ctx.spend()
    try:
        response = ctx.client.get(str(ctx.config.http_url.join(ctx.config.base_url.path)))
    except httpx.ConnectError:
        return warned(f"nothing listens on {ctx.config.http_url} (no plain HTTP at all)")
    location = response.headers.get("location", "")
    if response.status_code in (301, 302, 307, 308) and location.startswith("https://"):
        return passed(f"{response.status_code} to {location}")
    return failed(f"{ctx.config.http_url} answered {response.status_code} {location}".strip())


def _tls_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@check(
    "tls.version",
    "TLS 1.2 or newer",
    Severity.HIGH,
    "Offer TLS 1.2 and 1.3 only (Nginx `ssl_protocols TLSv1.2 TLSv1.3;`).",
)
def tls_version(ctx: ProbeContext) -> Outcome:
    if (refused := _https_only(ctx)) is not None:
        return refused
    ctx.spend()
    host = ctx.config.base_url.host
    port = ctx.config.base_url.port or 443
    with (
        socket.create_connection((host, port), timeout=ctx.config.timeout) as raw,
        _tls_context(ctx.config.insecure).wrap_socket(raw, server_hostname=host) as tls,
    ):
        negotiated = tls.version()
        cipher = (tls.cipher() or ("?",))[0]
    if negotiated in ACCEPTABLE_TLS:
        return passed(f"{negotiated} with {cipher}")
    return failed(f"negotiated {negotiated}")


@check(
    "tls.hsts",
    "HSTS sent",
    Severity.HIGH,
    "Send Strict-Transport-Security: max-age=63072000; includeSubDomains on HTTPS responses.",
)
def hsts(ctx: ProbeContext) -> Outcome:
    if (refused := _https_only(ctx)) is not None:
        return refused
    value = ctx.ready().headers.get("strict-transport-security")
    if value is None:
        return failed("no Strict-Transport-Security header")
    match = re.search(r"max-age=\"?(\d+)", value, re.IGNORECASE)
    age = int(match.group(1)) if match else 0
    if age < HSTS_MIN_SECONDS:
        return warned(f"max-age={age} is shorter than 180 days")
    return passed(value)


# --- headers -------------------------------------------------------------------------------


def _missing_security_headers(response: httpx.Response) -> list[str]:
    headers = response.headers
    missing: list[str] = []
    if headers.get("x-content-type-options", "").lower() != "nosniff":
        missing.append("X-Content-Type-Options: nosniff")
    csp = headers.get("content-security-policy", "")
    if not csp:
        missing.append("Content-Security-Policy")
    frame = headers.get("x-frame-options", "").upper()
    if frame not in ("DENY", "SAMEORIGIN") and "frame-ancestors" not in csp:
        missing.append("X-Frame-Options or CSP frame-ancestors")
    if "referrer-policy" not in headers:
        missing.append("Referrer-Policy")
    return missing


@check(
    "headers.security",
    "Security headers present",
    Severity.MEDIUM,
    "Send X-Content-Type-Options, X-Frame-Options, Content-Security-Policy and "
    "Referrer-Policy on every response (app middleware, Nginx `add_header ... always`).",
)
def security_headers(ctx: ProbeContext) -> Outcome:
    problems = []
    for label, response in (("readiness", ctx.ready()), ("404", ctx.not_found())):
        missing = _missing_security_headers(response)
        if missing:
            problems.append(f"{label} response lacks {', '.join(missing)}")
    if problems:
        return failed("; ".join(problems))
    return passed("nosniff, frame protection, CSP and Referrer-Policy on success and error")


@check(
    "headers.obsolete",
    "Obsolete and leaky headers absent",
    Severity.LOW,
    "Drop X-Powered-By, Expect-CT and Public-Key-Pins; send X-XSS-Protection: 0 or nothing.",
)
def obsolete_headers(ctx: ProbeContext) -> Outcome:
    found: list[str] = []
    for response in (ctx.ready(), ctx.not_found()):
        headers = response.headers
        xss = headers.get("x-xss-protection")
        if xss is not None and xss.strip() != "0":
            found.append(f"X-XSS-Protection: {xss}")
        found.extend(f"{name}: {headers[name]}" for name in _OBSOLETE if name in headers)
    if found:
        return failed(", ".join(sorted(set(found))))
    return passed("none of X-Powered-By, Expect-CT, Public-Key-Pins; X-XSS-Protection 0 or absent")


@check(
    "headers.server",
    "Server header leaks no version",
    Severity.LOW,
    "Hide versions (Nginx `server_tokens off;`, uvicorn --no-server-header).",
)
def server_header(ctx: ProbeContext) -> Outcome:
    values = {r.headers.get("server") for r in (ctx.ready(), ctx.not_found())} - {None}
    leaking = sorted(v for v in values if v and re.search(r"\d", v))
    if leaking:
        return failed(f"Server: {', '.join(leaking)}")
    return passed(f"Server: {', '.join(sorted(v for v in values if v)) or 'absent'}")


@check(
    "request_id.echo",
    "Request ids echoed",
    Severity.LOW,
    "Echo a well-formed X-Request-ID (or mint one) on every response, for log correlation.",
)
def request_id(ctx: ProbeContext) -> Outcome:
    if "x-request-id" not in ctx.ready().headers:
        return failed("responses carry no X-Request-ID")
    sent = f"slipway-probe-{ctx.marker}"
    echoed = ctx.request("GET", "health/live", headers={"X-Request-ID": sent}).headers.get(
        "x-request-id"
    )
    if echoed != sent:
        return failed(f"sent X-Request-ID {sent}, got {echoed}")
    return passed("minted when absent, echoed when sent")


# --- exposure ------------------------------------------------------------------------------


@check(
    "api.docs",
    "API docs and schema not exposed",
    Severity.MEDIUM,
    "Leave DOCS_ENABLED off in production, or require authentication for these paths.",
)
def docs(ctx: ProbeContext) -> Outcome:
    exposed = [
        path for path in ("docs", "redoc", "openapi.json") if ctx.request("GET", path).is_success
    ]
    if exposed:
        return failed(f"served: {', '.join('/' + p for p in exposed)}")
    return passed("/docs, /redoc and /openapi.json are not served")


@check(
    "metrics.public",
    "/metrics not public",
    Severity.HIGH,
    "Refuse /metrics at the proxy and use METRICS_EXPOSURE=token, ip_allowlist or port.",
)
def metrics(ctx: ProbeContext) -> Outcome:
    response = ctx.request("GET", "metrics")
    if response.is_success:
        return failed(f"/metrics answered {response.status_code} to an anonymous client")
    return passed(f"/metrics answered {response.status_code}")


@check(
    "cors.reflection",
    "CORS does not reflect an arbitrary Origin",
    Severity.HIGH,
    "List explicit origins (CORS_ORIGINS); never echo the request's Origin.",
)
def cors(ctx: ProbeContext) -> Outcome:
    origin = f"https://slipway-probe-{ctx.marker}.invalid"
    preflight = ctx.request(
        "OPTIONS",
        "api/v1/products",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    simple = ctx.request("GET", "api/v1/products?limit=1", headers={"Origin": origin})
    for label, response in (("preflight", preflight), ("GET", simple)):
        allowed = response.headers.get("access-control-allow-origin")
        credentials = response.headers.get("access-control-allow-credentials", "").lower()
        if allowed in (origin, "null"):
            return failed(f"{label} allowed the foreign origin {origin} ({allowed})")
        if allowed == "*" and credentials == "true":
            return failed(f"{label} allowed '*' with credentials")
        if allowed == "*":
            return warned(f"{label} allows any origin ('*'), without credentials")
    return passed("a foreign Origin gets no Access-Control-Allow-Origin")


@check(
    "errors.traceback",
    "Error bodies carry no traceback",
    Severity.HIGH,
    "Render every error as the JSON envelope; never run with debug pages in production.",
)
def error_bodies(ctx: ProbeContext) -> Outcome:
    responses = [
        ctx.not_found(),
        ctx.request("GET", "api/v1/products/not-a-number"),
        ctx.request(
            "POST",
            "api/v1/products",
            content=b'{"sku": [',
            headers={"Content-Type": "application/json"},
        ),
    ]
    for response in responses:
        where = f"{response.request.method} {response.request.url.path}"
        if response.status_code >= 500:
            return failed(f"{where} answered {response.status_code} to bad input")
        if _TRACEBACK_MARKERS.search(response.text):
            return failed(f"{where} ({response.status_code}) leaks internals in its body")
    codes = ", ".join(str(r.status_code) for r in responses)
    return passed(f"bad input answered {codes}, bodies without stack traces")


@check(
    "health.ready",
    "Readiness healthy",
    Severity.HIGH,
    "Check the database and Redis the readiness body names as failing.",
)
def readiness(ctx: ProbeContext) -> Outcome:
    response = ctx.ready()
    try:
        status = response.json().get("status")
    except ValueError:
        status = None
    if response.status_code == 200 and status == "ok":
        return passed("200, status ok")
    if response.status_code == 200 and status == "degraded":
        return warned("200, status degraded (an optional dependency fails)")
    return failed(f"{response.status_code}, status {status}")


@check(
    "auth.rate_limit",
    "Login rate limit active",
    Severity.HIGH,
    "Limit login attempts per client and per account (RATE_LIMIT_POLICIES login, Nginx "
    "`limit_req zone=auth`).",
)
def login_rate_limit(ctx: ProbeContext) -> Outcome:
    # An account that cannot exist (reserved TLD), so no real user is slowed down.
    form = {"username": f"slipway-probe-{ctx.marker}@example.invalid", "password": ctx.marker}
    for attempt in range(1, LOGIN_ATTEMPTS + 1):
        response = ctx.request("POST", LOGIN_PATH, data=form)
        if response.status_code == 429:
            return passed(f"429 after {attempt} attempts")
        if response.status_code >= 500:
            return failed(f"attempt {attempt} answered {response.status_code}")
    return failed(f"{LOGIN_ATTEMPTS} failed logins and no 429")


def run_probe(config: ProbeConfig) -> Report:
    """Every check against the deployment at `config.base_url`."""
    with httpx.Client(
        verify=_tls_context(config.insecure) if config.is_https else True,
        timeout=config.timeout,
        follow_redirects=False,
        headers={"User-Agent": _user_agent()},
    ) as client:
        context = ProbeContext(config, client)
        results = registry.run(context)
    return Report(tool="probe", target=str(config.base_url), results=results)
