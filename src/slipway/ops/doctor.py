"""`slipway doctor`: the production checklists of the source documents, checked from inside.

The effective settings (environment, `.env`, secrets directory) and the process environment
(CPU quota, user, cgroup limits, the deployment files beside the code) are audited against
every checklist item a program can verify. Production refuses to start on its worst problems
(`Settings.production_problems`); doctor loads the settings without that refusal so it can
report each problem as its own check, next to the ones that are legal but unwise.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from slipway.ops.checks import (
    CheckRegistry,
    Outcome,
    Report,
    Result,
    Severity,
    Status,
    failed,
    passed,
    run_check,
    warned,
)
from slipway.ops.manifests import (
    K8S_GRACE_DEFAULT,
    NGINX_UPSTREAM_KEEPALIVE_DEFAULT,
    k8s_shutdown_budget,
    nginx_upstreams,
)
from slipway.platform.settings import (
    DEFAULT_SECRET_KEY,
    MIN_SECRET_LENGTH,
    Environment,
    Settings,
    UnsafeSettingsError,
)
from slipway.serving.concurrency import CGROUP_ROOT, available_cpus, cgroup_cpu_quota

#: Where the repository keeps the files doctor compares timeouts with (relative to the
#: working directory); `--nginx-conf` / `--k8s-deployment` name others.
DEFAULT_NGINX_CONF = Path("deploy/nginx/nginx.conf")
DEFAULT_K8S_DEPLOYMENT = Path("deploy/k8s/base/app-deployment.yaml")
#: HSTS shorter than this (180 days) protects too briefly to count; browsers' preload list
#: wants a year.
HSTS_MIN_SECONDS = 15_552_000
ACCESS_TOKEN_MAX_MINUTES = 60
LOGIN_MAX_PER_MINUTE = 10.0
MAX_BODY_WARN = 10 * 1024 * 1024
#: PostgreSQL's default max_connections (100) minus its superuser reserve: one instance
#: must never be able to take them all.
PG_CONNECTION_BUDGET = 97
MIGRATION_CHECK_TIMEOUT = 15.0
#: Distinct characters a random secret of MIN_SECRET_LENGTH has with near certainty.
MIN_SECRET_DISTINCT = 12
_PLACEHOLDER_SECRETS = (
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "your-secret",
    "secret-key-here",
    "insecure",
)
#: Environment variables that mean "one of several replicas" even with one worker.
REPLICA_MARKERS = {
    "KUBERNETES_SERVICE_HOST": "Kubernetes",
    "DYNO": "Heroku",
    "ECS_CONTAINER_METADATA_URI_V4": "Amazon ECS",
    "K_SERVICE": "Cloud Run",
}

SecretSource = Literal["environment", ".env file", "secrets directory", "default"]
MigrationProbe = Callable[[Settings], tuple[str | None, str | None]]


class _AuditedSettings(Settings):
    """Settings without the production refusal: every problem becomes a check result."""

    # Overriding the validator's name without the decorator removes it from the subclass
    # (pydantic collects validators by name); tests/ops/test_doctor.py pins that behaviour.
    def _refuse_unsafe_production(self) -> Settings:  # type: ignore[override]
        return self


def load_audited_settings() -> tuple[Settings | None, list[str]]:
    """The effective settings, or the reasons they do not even parse."""
    try:
        return _AuditedSettings(), []
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, UnsafeSettingsError):  # pragma: no cover - refusal is off
                problems.extend(ctx_error.problems)
            else:
                name = ".".join(str(p) for p in err["loc"]).upper() or "settings"
                problems.append(f"{name}: {err['msg']}")
        return None, problems


async def _revisions(settings: Settings) -> tuple[str | None, str | None]:
    from slipway.platform.db.migrate import current_revision, head_revision

    async with asyncio.timeout(MIGRATION_CHECK_TIMEOUT):
        return await current_revision(settings), head_revision()


def database_revisions(settings: Settings) -> tuple[str | None, str | None]:
    """(current, head) migration revisions; raises when the database is unreachable."""
    return asyncio.run(_revisions(settings))


@dataclass
class DoctorContext:
    settings: Settings | None
    settings_problems: list[str] = field(default_factory=list)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    cpus: int = field(default_factory=available_cpus)
    cgroup_root: Path = CGROUP_ROOT
    euid: int = field(default_factory=os.geteuid)
    nginx_conf: Path | None = None
    k8s_deployment: Path | None = None
    offline: bool = False
    revisions: MigrationProbe = database_revisions

    @property
    def s(self) -> Settings:
        assert self.settings is not None  # only settings.valid runs without settings
        return self.settings

    @property
    def workers(self) -> tuple[int, str]:
        raw = self.environ.get("WEB_CONCURRENCY", "").strip()
        if raw.isdigit() and int(raw) > 0:
            return int(raw), "WEB_CONCURRENCY"
        return self.s.workers, "WORKERS"

    def replica_platform(self) -> str | None:
        return next((name for var, name in REPLICA_MARKERS.items() if self.environ.get(var)), None)

    def secret_source(self) -> SecretSource:
        """Where SECRET_KEY comes from, in the settings' own precedence order."""
        if any(key.upper() == "SECRET_KEY" for key in self.environ):
            return "environment"
        dotenv = self.cwd / ".env"
        if dotenv.is_file() and re.search(
            r"^\s*(export\s+)?SECRET_KEY\s*=",
            dotenv.read_text(errors="replace"),
            re.IGNORECASE | re.MULTILINE,
        ):
            return ".env file"
        secrets_dir = Path(self.environ.get("SECRETS_DIR", "/run/secrets"))
        if secrets_dir.is_dir() and any(
            p.name.lower() == "secret_key" for p in secrets_dir.iterdir()
        ):
            return "secrets directory"
        return "default"

    def resolve(self, explicit: Path | None, default: Path) -> Path | None:
        if explicit is not None:
            return explicit
        candidate = self.cwd / default
        return candidate if candidate.is_file() else None


registry: CheckRegistry[DoctorContext] = CheckRegistry()
check = registry.check


def _names(flags: Mapping[str, bool]) -> str:
    return ", ".join(name for name, on in flags.items() if on)


# --- configuration -------------------------------------------------------------------------


@check(
    "settings.valid",
    "Settings load and validate",
    Severity.CRITICAL,
    "Fix the named variables (see docs/configuration.md and .env.example).",
)
def settings_valid(ctx: DoctorContext) -> Outcome:
    if ctx.settings is None:
        return failed("; ".join(ctx.settings_problems) or "the settings do not load")
    return passed("every setting parses and validates")


@check(
    "env.production",
    "Environment is production",
    Severity.HIGH,
    "Set ENVIRONMENT=production (it turns on the startup refusal of unsafe values).",
)
def environment(ctx: DoctorContext) -> Outcome:
    env = ctx.s.environment
    if env is Environment.PRODUCTION:
        return passed("ENVIRONMENT=production")
    if env is Environment.STAGING:
        return warned("ENVIRONMENT=staging: unsafe values are not refused at startup")
    return failed(f"ENVIRONMENT={env.value}: development defaults (docs, console logs) apply")


@check(
    "app.debug",
    "Debug features off",
    Severity.CRITICAL,
    "Set DEBUG=false, PROFILER_ENABLED=false and DB_ECHO=false.",
)
def debug_off(ctx: DoctorContext) -> Outcome:
    flags = {
        "DEBUG": ctx.s.debug,
        "PROFILER_ENABLED": ctx.s.profiler_enabled,
        "DB_ECHO (logs SQL with parameters)": ctx.s.db_echo,
    }
    if any(flags.values()):
        return failed(f"on: {_names(flags)}")
    return passed("DEBUG, PROFILER_ENABLED and DB_ECHO are off")


@check(
    "api.docs",
    "API docs disabled or protected",
    Severity.MEDIUM,
    "Leave DOCS_ENABLED unset in production, or put /docs, /redoc and /openapi.json behind "
    "authentication at the proxy.",
)
def docs_exposure(ctx: DoctorContext) -> Outcome:
    if not ctx.s.docs_on:
        return passed("/docs, /redoc and /openapi.json are not served")
    if ctx.s.is_production and ctx.s.allow_docs_in_production:
        return warned("docs are served by explicit opt-in (ALLOW_DOCS_IN_PRODUCTION=true)")
    return failed("/docs, /redoc and /openapi.json are served to anyone")


@check(
    "secret.key",
    "Strong SECRET_KEY from the environment or secrets directory",
    Severity.CRITICAL,
    "Generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'` and "
    "pass it as SECRET_KEY or as the file SECRETS_DIR/secret_key.",
)
def secret_key(ctx: DoctorContext) -> Outcome:
    secret = ctx.s.secret_key.get_secret_value()
    source = ctx.secret_source()
    lowered = secret.lower()
    if secret == DEFAULT_SECRET_KEY or source == "default":
        return failed("SECRET_KEY is the built-in default")
    if len(secret) < MIN_SECRET_LENGTH:
        return failed(f"SECRET_KEY has {len(secret)} characters (minimum {MIN_SECRET_LENGTH})")
    if any(word in lowered for word in _PLACEHOLDER_SECRETS):
        return failed("SECRET_KEY looks like a placeholder from documentation")
    if len(set(secret)) < MIN_SECRET_DISTINCT:
        return failed(f"SECRET_KEY uses only {len(set(secret))} distinct characters")
    if source == ".env file":
        return warned("SECRET_KEY comes from a .env file in the working directory")
    return passed(f"{len(secret)} characters from the {source}")


@check(
    "auth.tokens",
    "Short-lived tokens, Secure refresh cookie",
    Severity.HIGH,
    f"Keep ACCESS_TOKEN_EXPIRE_MINUTES <= {ACCESS_TOKEN_MAX_MINUTES}, "
    "REFRESH_COOKIE_SECURE=true, and give RS256/EdDSA a JWT_PRIVATE_KEY.",
)
def token_policy(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    problems: list[str] = []
    if s.access_token_expire_minutes > ACCESS_TOKEN_MAX_MINUTES:
        problems.append(f"access tokens live {s.access_token_expire_minutes} min")
    if not s.refresh_cookie_secure:
        problems.append("the refresh cookie is sent over plain HTTP (REFRESH_COOKIE_SECURE)")
    if s.jwt_algorithm != "HS256" and s.jwt_private_key is None:
        problems.append(f"JWT_ALGORITHM={s.jwt_algorithm} without JWT_PRIVATE_KEY")
    if problems:
        return failed("; ".join(problems))
    return passed(
        f"{s.jwt_algorithm}, access {s.access_token_expire_minutes} min, "
        f"refresh {s.refresh_token_expire_days} d, Secure cookie"
    )


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _is_local_host(host: str | None) -> bool:
    if not host:
        return True  # a Unix socket
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@check(
    "http.cors",
    "Explicit CORS origins",
    Severity.HIGH,
    "List the browser origins that may call the API, e.g. "
    "CORS_ORIGINS=https://app.example.com (scheme and host, no path, never '*').",
)
def cors(ctx: DoctorContext) -> Outcome:
    origins = ctx.s.cors_origins
    if not origins:
        return passed("no cross-origin access (same-origin clients only)")
    bad = [o for o in origins if o in ("*", "null") or not _ORIGIN.match(o)]
    if bad:
        return failed(f"not explicit origins: {', '.join(bad)}")
    plain = [
        o for o in origins if o.startswith("http://") and urlsplit(o).hostname not in _LOCAL_HOSTS
    ]
    if plain:
        return warned(f"plain-HTTP origins: {', '.join(plain)}")
    return passed(", ".join(origins))


@check(
    "http.allowed_hosts",
    "Allowed hosts set",
    Severity.HIGH,
    "Set ALLOWED_HOSTS to the public host names (plus localhost for probes), never '*'.",
)
def allowed_hosts(ctx: DoctorContext) -> Outcome:
    hosts = ctx.s.allowed_hosts
    if "*" in hosts:
        return failed("ALLOWED_HOSTS contains '*': any Host header is accepted")
    if "allowed_hosts" not in ctx.s.model_fields_set:
        return warned("ALLOWED_HOSTS is the default (loopback names only)")
    if "testserver" in hosts:
        return warned("ALLOWED_HOSTS contains the test client's 'testserver'")
    return passed(", ".join(hosts))


@check(
    "http.tls",
    "HTTPS redirect or HSTS behind TLS",
    Severity.HIGH,
    f"Keep HSTS_SECONDS >= {HSTS_MIN_SECONDS} (default 63072000) and terminate TLS at the "
    "proxy; or set HTTPS_REDIRECT=true.",
)
def tls(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if s.https_redirect:
        return passed(f"HTTPS_REDIRECT=true, HSTS max-age={s.hsts_seconds}")
    if s.hsts_seconds >= HSTS_MIN_SECONDS:
        return passed(f"HSTS max-age={s.hsts_seconds} on HTTPS responses")
    if s.hsts_seconds > 0:
        return warned(f"HSTS max-age={s.hsts_seconds} is shorter than 180 days")
    return failed("no HSTS and no HTTPS redirect")


@check(
    "http.proxy_trust",
    "Forwarded headers trusted from the proxy only",
    Severity.MEDIUM,
    "Set FORWARDED_ALLOW_IPS to the proxy's addresses (e.g. 10.0.0.0/8), not '*'.",
)
def proxy_trust(ctx: DoctorContext) -> Outcome:
    trusted = ctx.s.forwarded_allow_ips
    if "*" in trusted:
        return warned(
            "FORWARDED_ALLOW_IPS='*': any peer can set X-Forwarded-For (safe only when "
            "nothing but the proxy reaches the app)"
        )
    return passed(f"X-Forwarded-* trusted from {', '.join(trusted)}")


@check(
    "http.body_limit",
    "Request bodies bounded",
    Severity.MEDIUM,
    "Keep MAX_BODY_SIZE at a few MiB (default 1 MiB); upload large files to storage directly.",
)
def body_limit(ctx: DoctorContext) -> Outcome:
    size = ctx.s.max_body_size
    if size > MAX_BODY_WARN:
        return warned(f"MAX_BODY_SIZE={size} bytes (over 10 MiB)")
    return passed(f"MAX_BODY_SIZE={size} bytes")


@check(
    "http.public_url",
    "Public base URL is HTTPS",
    Severity.MEDIUM,
    "Set PUBLIC_BASE_URL to the public https:// address (it is used in e-mailed links).",
)
def public_url(ctx: DoctorContext) -> Outcome:
    url = urlsplit(ctx.s.public_base_url)
    if url.scheme != "https":
        return failed(f"PUBLIC_BASE_URL={ctx.s.public_base_url}: mailed tokens travel over HTTP")
    if _is_local_host(url.hostname):
        return failed(f"PUBLIC_BASE_URL={ctx.s.public_base_url} is a loopback address")
    return passed(ctx.s.public_base_url)


# --- data ----------------------------------------------------------------------------------


@check(
    "db.backend",
    "PostgreSQL database",
    Severity.HIGH,
    "Point DATABASE_URL at PostgreSQL (postgresql+asyncpg://...).",
)
def database_backend(ctx: DoctorContext) -> Outcome:
    if not ctx.s.is_sqlite:
        return passed(f"{urlsplit(ctx.s.database_url).scheme} on {_db_host(ctx.s)}")
    if ctx.s.allow_sqlite_in_production:
        return warned("SQLite by explicit opt-in (ALLOW_SQLITE_IN_PRODUCTION=true)")
    return failed("SQLite: one writer, one machine")


def _db_host(settings: Settings) -> str:
    url = urlsplit(settings.database_url)
    return f"{url.hostname or 'a local socket'}:{url.port or 5432}"


@check(
    "db.pool",
    "Connection pool sized",
    Severity.MEDIUM,
    "Keep WORKERS x (DB_POOL_SIZE + DB_MAX_OVERFLOW) under the server's max_connections "
    "(100 by default) divided by the replicas; keep DB_POOL_RECYCLE and "
    "DB_STATEMENT_TIMEOUT_MS set.",
)
def database_pool(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if s.is_sqlite:
        return passed("SQLite: no connection pool")
    workers, _ = ctx.workers
    per_process = s.db_pool_size + s.db_max_overflow
    per_instance = workers * per_process
    summary = f"{workers} workers x ({s.db_pool_size} + {s.db_max_overflow}) = {per_instance}"
    if per_instance > PG_CONNECTION_BUDGET:
        return failed(f"{summary} connections: one instance can exhaust max_connections=100")
    gaps = {
        "DB_POOL_RECYCLE=-1 (connections never recycled)": s.db_pool_recycle < 0,
        "DB_STATEMENT_TIMEOUT_MS=0 (queries may run forever)": s.db_statement_timeout_ms == 0,
        f"DB_POOL_TIMEOUT={s.db_pool_timeout:g}s (callers queue too long)": s.db_pool_timeout > 30,
    }
    if any(gaps.values()):
        return warned(f"{summary}; {_names(gaps)}")
    return passed(f"{summary} connections per instance, pre-ping, recycle {s.db_pool_recycle}s")


@check(
    "db.tls",
    "Database connection encrypted",
    Severity.LOW,
    "Add ?ssl=require (or verify-full) to DATABASE_URL when the database is not on localhost.",
)
def database_tls(ctx: DoctorContext) -> Outcome:
    if ctx.s.is_sqlite:
        return passed("SQLite: no network connection")
    url = urlsplit(ctx.s.database_url)
    query = {key.lower(): values[-1].lower() for key, values in parse_qs(url.query).items()}
    mode = query.get("ssl") or query.get("sslmode")
    if mode in ("require", "verify-ca", "verify-full", "true"):
        return passed(f"ssl={mode}")
    if mode is not None:
        return warned(f"ssl={mode}: the connection may be unencrypted")
    if _is_local_host(url.hostname):
        return passed("loopback connection")
    return warned(f"no ssl parameter for {url.hostname}: asyncpg falls back to plain text")


@check(
    "db.migrations",
    "Migrations at head",
    Severity.CRITICAL,
    "Run `slipway migrate` (one step before the rollout: release phase, Job, one-shot service).",
)
def migrations(ctx: DoctorContext) -> Outcome:
    if ctx.offline:
        return warned("not checked (--offline)")
    try:
        current, head = ctx.revisions(ctx.s)
    except Exception as exc:  # unreachable, refused, bad credentials: all one answer
        return failed(f"cannot read the schema revision: {type(exc).__name__}: {exc}"[:300])
    if current is None:
        return failed(f"the database has no schema (head is {head})")
    if current != head:
        return failed(f"the database is at {current}, the code's head is {head}")
    return passed(f"at head ({head})")


# --- observability -------------------------------------------------------------------------


@check(
    "logs.format",
    "JSON logs at a production level",
    Severity.MEDIUM,
    "Set LOG_FORMAT=json (the production default) and LOG_LEVEL=INFO.",
)
def log_format(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if s.effective_log_format != "json":
        return failed(f"LOG_FORMAT={s.effective_log_format}: log collectors cannot parse it")
    if s.log_level == "DEBUG":
        return warned("LOG_LEVEL=DEBUG: verbose, and may log payloads")
    return passed(f"json at {s.log_level}")


@check(
    "errors.tracker",
    "Error tracker configured",
    Severity.MEDIUM,
    "Set SENTRY_DSN (any Sentry-compatible service).",
)
def error_tracker(ctx: DoctorContext) -> Outcome:
    if ctx.s.sentry_dsn is not None and ctx.s.sentry_dsn.get_secret_value():
        host = urlsplit(ctx.s.sentry_dsn.get_secret_value()).hostname
        return passed(f"Sentry ({host})")
    return warned("no SENTRY_DSN: unhandled errors reach only the logs")


@check(
    "metrics.exposure",
    "/metrics not public",
    Severity.HIGH,
    "Use METRICS_EXPOSURE=token (with METRICS_TOKEN), ip_allowlist of private networks, or "
    "port; never public.",
)
def metrics_exposure(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if not s.metrics_enabled:
        return warned("METRICS_ENABLED=false: nothing to scrape, no alerts")
    mode = s.metrics_exposure_mode
    if mode == "public":
        return failed("/metrics is served to anyone")
    if mode == "ip_allowlist":
        everyone = [
            n for n in s.metrics_allow_ips if ipaddress.ip_network(n, strict=False).prefixlen == 0
        ]
        if everyone:
            return failed(f"METRICS_ALLOW_IPS contains {', '.join(everyone)}: every address")
        return passed(f"ip_allowlist: {', '.join(s.metrics_allow_ips)}")
    if mode == "port":
        return passed(f"own listener on port {s.metrics_port}, not on the app's port")
    return passed("bearer token required")


# --- traffic and shared state --------------------------------------------------------------


def _per_minute(policy: str) -> float:
    from limits import parse_many

    return min(
        item.amount * 60 / (item.multiples * item.GRANULARITY.seconds)
        for item in parse_many(policy)
    )


@check(
    "ratelimit.enabled",
    "Rate limiting on, login strictly",
    Severity.HIGH,
    f"Set RATE_LIMIT_ENABLED=true and keep the login policy at <= {LOGIN_MAX_PER_MINUTE:g}/minute "
    '(RATE_LIMIT_POLICIES=\'{"login": "5/minute"}\').',
)
def rate_limits(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if not s.rate_limit_enabled:
        return failed("RATE_LIMIT_ENABLED=false: no limit on login, search or orders")
    login = s.rate_limit_policies["login"]
    if _per_minute(login) > LOGIN_MAX_PER_MINUTE:
        return warned(f"login allows {login}: password guessing is cheap")
    return passed(f"default {s.rate_limit_default}, login {login}")


@check(
    "state.shared",
    "Rate limits, cache and events shared between processes",
    Severity.HIGH,
    "Set REDIS_URL whenever more than one process serves (WORKERS > 1, replicas).",
)
def shared_state(ctx: DoctorContext) -> Outcome:
    workers, source = ctx.workers
    platform = ctx.replica_platform()
    if ctx.s.redis_url:
        return passed(f"Redis ({urlsplit(ctx.s.redis_url).hostname})")
    if workers > 1 or platform:
        where = f"{source}={workers}" if workers > 1 else f"replicas on {platform}"
        return failed(f"{where} without REDIS_URL: every process limits and caches on its own")
    return passed("one process: in-process limits and cache are consistent")


@check(
    "jobs.broker",
    "Background jobs on a broker",
    Severity.HIGH,
    "Set CELERY_BROKER_URL (or REDIS_URL) and run `slipway worker`.",
)
def jobs_broker(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if s.jobs_engine == "celery":
        return passed(f"Celery on {urlsplit(s.jobs_broker_url or '').hostname}")
    if s.allow_embedded_jobs_in_production:
        return warned("in-process jobs by opt-in: queued jobs die with the process")
    return failed("in-process jobs: queued jobs die with the process")


@check(
    "jobs.timeouts",
    "Job redelivery after the longest run and retry wait",
    Severity.MEDIUM,
    "Keep JOBS_VISIBILITY_TIMEOUT above JOBS_TIME_LIMIT and JOBS_RETRY_BACKOFF_MAX.",
)
def jobs_timeouts(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    longest = max(s.jobs_time_limit, s.jobs_retry_backoff_max)
    if s.jobs_visibility_timeout <= longest:
        return failed(
            f"JOBS_VISIBILITY_TIMEOUT={s.jobs_visibility_timeout}s <= {longest}s: tasks still "
            "running or waiting are delivered twice"
        )
    return passed(f"redelivery after {s.jobs_visibility_timeout}s > {longest}s")


@check(
    "mail.transport",
    "Mail delivered over SMTP with TLS",
    Severity.MEDIUM,
    "Set SMTP_HOST (and SMTP_USER/SMTP_PASSWORD) with SMTP_STARTTLS=true or SMTP_TLS=true.",
)
def mail_transport(ctx: DoctorContext) -> Outcome:
    s = ctx.s
    if s.smtp_host is None or s.mail_backend == "log":
        return warned("mail is only logged: verification and reset e-mails never arrive")
    if not (s.smtp_tls or s.smtp_starttls) and not _is_local_host(s.smtp_host):
        return warned(f"SMTP to {s.smtp_host} without TLS")
    return passed(f"SMTP {s.smtp_host}:{s.smtp_port} ({'TLS' if s.smtp_tls else 'STARTTLS'})")


# --- server and runtime --------------------------------------------------------------------


@check(
    "server.workers",
    "Worker count fits the CPU quota",
    Severity.MEDIUM,
    "Run about one worker per usable CPU (the cgroup quota, not the host's cores); scale "
    "with replicas.",
)
def workers_fit(ctx: DoctorContext) -> Outcome:
    workers, source = ctx.workers
    summary = f"{source}={workers} for {ctx.cpus} usable CPU(s)"
    if workers > 2 * ctx.cpus:
        return failed(f"{summary}: async workers beyond the cores only add memory and switches")
    if workers > ctx.cpus:
        return warned(f"{summary}: more event loops than cores")
    return passed(summary)


@check(
    "server.keepalive",
    "Keep-alive outlives the proxy's idle timeout",
    Severity.HIGH,
    "Set KEEPALIVE_TIMEOUT above the proxy's upstream keepalive_timeout (75 s for Nginx and "
    "load balancers at 60 s).",
)
def keepalive(ctx: DoctorContext) -> Outcome:
    conf = ctx.resolve(ctx.nginx_conf, DEFAULT_NGINX_CONF)
    if conf is None:
        proxy_idle, source = NGINX_UPSTREAM_KEEPALIVE_DEFAULT, "the usual proxy default"
    else:
        reused = [u for u in nginx_upstreams(conf) if u.keepalive]
        if not reused:
            return passed(f"{conf}: the proxy keeps no idle upstream connections")
        proxy_idle = max(u.idle_timeout for u in reused)
        source = str(conf)
    app = ctx.s.keepalive_timeout
    summary = f"KEEPALIVE_TIMEOUT={app}s vs proxy idle {proxy_idle:g}s ({source})"
    if app <= proxy_idle:
        return failed(f"{summary}: the app closes first and the proxy answers 502")
    return passed(summary)


@check(
    "server.graceful_shutdown",
    "Graceful shutdown fits the orchestrator's grace period",
    Severity.HIGH,
    "Keep GRACEFUL_TIMEOUT + the preStop delay below terminationGracePeriodSeconds.",
)
def graceful_shutdown(ctx: DoctorContext) -> Outcome:
    manifest = ctx.resolve(ctx.k8s_deployment, DEFAULT_K8S_DEPLOYMENT)
    budget = k8s_shutdown_budget(manifest) if manifest is not None else None
    grace = budget.grace_seconds if budget else K8S_GRACE_DEFAULT
    prestop = budget.prestop_seconds if budget else 0.0
    source = budget.source if budget else "Kubernetes defaults"
    drain = ctx.s.graceful_timeout
    summary = f"preStop {prestop:g}s + GRACEFUL_TIMEOUT {drain}s vs grace {grace:g}s ({source})"
    if prestop + drain >= grace:
        return failed(f"{summary}: SIGKILL cuts requests that are still draining")
    return passed(summary)


@check(
    "runtime.user",
    "Not running as root",
    Severity.MEDIUM,
    "Run as an unprivileged user (the image's USER, runAsNonRoot in Kubernetes).",
)
def non_root(ctx: DoctorContext) -> Outcome:
    if ctx.euid == 0:
        # A warning, not a failure: in a user namespace (rootless Podman, userns-remap) uid 0
        # inside is an unprivileged uid outside, which the process cannot tell.
        return warned("running as uid 0")
    return passed(f"uid {ctx.euid}")


def _memory_limit(root: Path) -> int | None:
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 2**60:
            return None
        return int(text)
    return None


@check(
    "runtime.limits",
    "CPU and memory limits set",
    Severity.LOW,
    "Set container limits (docker --cpus/--memory, Kubernetes resources.limits).",
)
def resource_limits(ctx: DoctorContext) -> Outcome:
    cpu = cgroup_cpu_quota(ctx.cgroup_root)
    memory = _memory_limit(ctx.cgroup_root)
    if cpu is None or memory is None:
        missing = _names({"CPU": cpu is None, "memory": memory is None})
        return warned(f"no {missing} limit in {ctx.cgroup_root}")
    return passed(f"{cpu:g} CPU, {memory // (1024 * 1024)} MiB")


def run_doctor(context: DoctorContext) -> Report:
    """Every check, or only `settings.valid` when the settings do not load."""
    report = Report(tool="doctor", target=str(context.cwd))
    if context.settings is None:
        first = registry.checks[0]
        report.results = [run_check(first, context)]
        return report
    report.results = registry.run(context)
    return report


def failing(results: list[Result]) -> list[str]:
    return [r.id for r in results if r.status is Status.FAIL]
