"""Typed settings: one class, read from the environment, `.env` and a secrets directory.

Precedence (highest first): init kwargs, environment variables, `.env`, secrets directory
(`SECRETS_DIR`, default `/run/secrets`, where Docker and Kubernetes mount secrets), defaults.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

#: Values shipped in samples and docs. A production process must never run with them.
DEFAULT_SECRET_KEY = "change-me-in-production"  # noqa: S105 - the value we refuse
MIN_SECRET_LENGTH = 32

#: Named rate-limit policies (limits' notation; several limits separated by ";").
DEFAULT_RATE_LIMIT_POLICIES: dict[str, str] = {
    "login": "5/minute",
    "register": "10/hour",
    "password_reset": "5/hour",
    "search": "60/minute",
    "orders": "30/minute",
}


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TESTING = "testing"
    STAGING = "staging"
    PRODUCTION = "production"


class UnsafeSettingsError(ValueError):
    """Raised when production settings are unsafe; lists every problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "refusing to start in production:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _split_list(value: Any) -> Any:
    """Accept JSON lists or comma-separated strings for list settings."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import orjson

            return orjson.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


StrList = Annotated[list[str], NoDecode]


def normalise_database_url(url: str) -> str:
    """Rewrite Heroku/DigitalOcean style URLs to the async drivers SQLAlchemy needs."""
    for prefix in (
        "postgres://",
        "postgresql://",
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
    ):
        if url.startswith(prefix):
            url = "postgresql+asyncpg://" + url[len(prefix) :]
            break
    if url.startswith("postgresql+asyncpg://") and "sslmode=" in url:
        # Managed databases (DigitalOcean, Heroku, RDS) hand out libpq's `sslmode=`; asyncpg
        # spells the same thing `ssl=`.
        return url.replace("sslmode=", "ssl=")
    if url.startswith("sqlite://") and not url.startswith("sqlite+aiosqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://") :]
    return url


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slipway")
    except PackageNotFoundError:  # running from a source tree without install
        return "0.0.0"


class Settings(BaseSettings):
    """Every knob Slipway has. `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        secrets_dir=None,
    )

    # --- Application ---
    app_name: str = "Slipway"
    app_version: str = Field(default_factory=_package_version)
    git_sha: str | None = None
    debug: bool = False
    environment: Environment = Environment.DEVELOPMENT

    # --- Server ---
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    forwarded_allow_ips: StrList = ["127.0.0.1", "::1"]
    #: Seconds the server waits for in-flight requests at shutdown before cancelling them.
    graceful_timeout: int = Field(default=20, ge=1, le=300)
    #: Gunicorn kills a worker whose event loop has not checked in for this many seconds
    #: (a blocked loop, not a slow request: async workers heartbeat between requests).
    worker_timeout: int = Field(default=30, ge=5, le=600)
    #: Must stay above the proxy's upstream idle timeout (Nginx: keepalive_timeout 60s).
    keepalive_timeout: int = Field(default=75, ge=1, le=3600)

    # --- Database ---
    database_url: str = "sqlite+aiosqlite:///./slipway.db"
    allow_sqlite_in_production: bool = False
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout: float = Field(default=10.0, gt=0, le=300)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_echo: bool = False
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    #: No connection pool: every session opens and closes its own connection. For AWS
    #: Lambda and other serverless runtimes, where a frozen sandbox would keep pooled
    #: connections the database has long dropped (slipway.lambda_handler sets it).
    db_null_pool: bool = False

    # --- Redis ---
    redis_url: str | None = None
    redis_required: bool = False

    # --- Security ---
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    jwt_algorithm: Literal["HS256", "RS256", "EdDSA"] = "HS256"
    jwt_issuer: str = "slipway"
    jwt_audience: str = "slipway-api"
    jwt_private_key: SecretStr | None = None
    jwt_public_key: str | None = None
    access_token_expire_minutes: int = Field(default=15, ge=1, le=24 * 60)
    refresh_token_expire_days: int = Field(default=14, ge=1, le=365)
    allowed_hosts: StrList = ["127.0.0.1", "localhost", "testserver"]
    cors_origins: StrList = []
    https_redirect: bool = False
    hsts_seconds: int = Field(default=63_072_000, ge=0)
    max_body_size: int = Field(default=1_048_576, ge=1024)

    # API docs: on in development, off in production unless explicitly enabled.
    docs_enabled: bool | None = None
    allow_docs_in_production: bool = False

    # --- Logging ---
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None

    # --- Error tracking ---
    sentry_dsn: SecretStr | None = None

    # --- Mail ---
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    #: Implicit TLS from the first byte (port 465); exclusive with SMTP_STARTTLS.
    smtp_tls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = "Slipway <no-reply@slipway.local>"
    #: "auto": SMTP when SMTP_HOST is set, otherwise mail is written to the log.
    mail_backend: Literal["auto", "smtp", "log"] = "auto"

    # --- Cache (platform/cache) ---
    cache_enabled: bool = True
    cache_prefix: str = Field(default="slipway", pattern=r"^[A-Za-z0-9_.-]+$")
    #: Bump when cached schemas change shape, so old entries are never read back.
    cache_schema_version: str = Field(default="v1", pattern=r"^[A-Za-z0-9_.-]+$")
    cache_default_ttl: int = Field(default=60, ge=1)
    cache_product_ttl: int = Field(default=300, ge=1)
    cache_dashboard_ttl: int = Field(default=30, ge=1)
    #: Upper bound of any entry's TTL; tag sets live this long, so a tag always outlives
    #: the entries it names.
    cache_max_ttl: int = Field(default=86_400, ge=1)
    #: How long the cross-process load lock lives: longer than the slowest loader.
    cache_lock_ttl: int = Field(default=10, ge=1, le=300)
    #: How long other callers wait for the lock holder before loading themselves.
    cache_lock_wait: float = Field(default=5.0, gt=0, le=60)
    #: After a Redis error the cache is bypassed this long before Redis is tried again.
    cache_retry_seconds: float = Field(default=1.0, ge=0, le=60)
    cache_redis_max_connections: int = Field(default=50, ge=1, le=1000)
    #: Entries kept by the in-process (embedded) backend, LRU beyond that.
    cache_memory_size: int = Field(default=10_000, ge=1)

    # --- Rate limiting (platform/ratelimit) ---
    rate_limit_enabled: bool = True
    rate_limit_strategy: Literal["moving-window", "sliding-window-counter", "fixed-window"] = (
        "moving-window"
    )
    #: Per client (IP, and user when authenticated) on every path under RATE_LIMIT_PATHS.
    rate_limit_default: str = "300/minute"
    #: Named strict policies routes declare with `RateLimit("name", keys=...)`. JSON in the
    #: environment; entries given there replace the defaults of the same name only.
    rate_limit_policies: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_RATE_LIMIT_POLICIES)
    )
    rate_limit_paths: StrList = ["/api"]
    rate_limit_exempt_paths: StrList = ["/health", "/metrics"]
    rate_limit_key_prefix: str = Field(default="slipway:ratelimit", pattern=r"^[A-Za-z0-9_.:-]+$")
    #: When the limit storage (Redis) is down: serve (open) or answer 503 (closed).
    rate_limit_fail_open: bool = True
    #: After a Redis error the limiter applies the fail policy this long before retrying.
    rate_limit_retry_seconds: float = Field(default=1.0, ge=0, le=60)

    # --- Background jobs (platform/jobs) ---
    #: "auto": Celery when a broker is configured, otherwise the in-process runner.
    jobs_backend: Literal["auto", "celery", "embedded"] = "auto"
    celery_broker_url: str | None = None
    jobs_embedded_concurrency: int = Field(default=4, ge=1, le=64)
    jobs_max_retries: int = Field(default=5, ge=0, le=50)
    jobs_soft_time_limit: int = Field(default=120, ge=1)
    jobs_time_limit: int = Field(default=150, ge=1)
    jobs_max_tasks_per_child: int = Field(default=1000, ge=1)
    #: Retry n waits a random time in [0, JOBS_RETRY_BACKOFF * 2**n] s, capped (full jitter).
    jobs_retry_backoff: int = Field(default=2, ge=1, le=600)
    jobs_retry_backoff_max: int = Field(default=600, ge=1)
    #: Redis broker: an unacknowledged task (its worker died) is redelivered after this
    #: many seconds. Must exceed the longest retry countdown and the hard time limit, or
    #: tasks still waiting or running are delivered twice.
    jobs_visibility_timeout: int = Field(default=3600, ge=1)
    jobs_queue: str = Field(default="slipway", pattern=r"^[A-Za-z0-9_.:-]+$")
    #: Worker processes per `slipway worker` (default: CPUs available to this process).
    jobs_worker_concurrency: int | None = Field(default=None, ge=1, le=64)
    #: How often beat (or the embedded runner) purges expired rows.
    jobs_purge_interval_seconds: int = Field(default=3600, ge=1)
    #: Where `slipway beat` keeps its schedule state (default: the temp directory).
    celery_beat_schedule_file: Path | None = None
    #: Production refuses to run jobs in-process unless this opt-in is set.
    allow_embedded_jobs_in_production: bool = False
    #: Finished jobs and expired tokens older than this are purged by the periodic task.
    retention_days: int = Field(default=14, ge=1)

    # --- Realtime (platform/events) ---
    #: Idle connections get a heartbeat message this often; the token is re-checked too.
    ws_heartbeat_seconds: float = Field(default=20.0, gt=0)
    #: Messages waiting per connection; a consumer that falls this far behind is closed
    #: with 1013 so it never holds back the others.
    ws_send_queue_size: int = Field(default=100, ge=1, le=10_000)
    #: How long a client has to send {"type": "auth", "token": ...} after connecting.
    ws_auth_timeout: float = Field(default=5.0, gt=0, le=60)
    #: Upper bound on a close handshake (a stalled client cannot hold a connection open).
    ws_close_timeout: float = Field(default=5.0, gt=0, le=60)
    events_channel: str = Field(default="slipway:events", pattern=r"^[A-Za-z0-9_.:-]+$")

    # --- Identity (identity area) ---
    password_reset_expire_minutes: int = Field(default=30, ge=1, le=24 * 60)
    email_verify_expire_hours: int = Field(default=48, ge=1)
    #: How long a "session still valid" check is cached; bounds revocation latency.
    session_check_cache_seconds: int = Field(default=5, ge=0, le=60)
    public_base_url: str = "http://127.0.0.1:8000"
    #: Argon2id cost. The floors are OWASP's weakest row (m=7 MiB, t=5); the identity area
    #: also refuses combinations below its table (e.g. m=19 MiB needs t>=2).
    password_hash_time_cost: int = Field(default=2, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=19_456, ge=7_168, le=1_048_576)
    password_hash_parallelism: int = Field(default=1, ge=1, le=16)
    #: Hashes computed at once per process (each holds its memory cost in RAM).
    password_hash_concurrency: int = Field(default=4, ge=1, le=64)
    #: Failed logins on one account before each further attempt must wait; the wait doubles
    #: up to the cap and the count decays after the window, so nobody is locked out forever.
    login_slowdown_after_failures: int = Field(default=5, ge=1, le=100)
    login_slowdown_max_seconds: int = Field(default=900, ge=1, le=86_400)
    login_failure_window_seconds: int = Field(default=3_600, ge=60, le=86_400)
    refresh_cookie_name: str = "refresh_token"
    #: Only for local plain-HTTP development; production keeps the cookie Secure.
    refresh_cookie_secure: bool = True

    # --- File storage (platform/storage): reports ---
    storage_backend: Literal["local", "s3"] = "local"
    storage_local_dir: Path = Path("./var/storage")
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    # --- Observability (platform/metrics, platform/observability) ---
    #: Prometheus metrics: the request middleware, GET /metrics and the worker gauges.
    metrics_enabled: bool = True
    #: Who may read /metrics. "auto": public in development and testing; elsewhere "token"
    #: when METRICS_TOKEN is set, else "ip_allowlist". "port": not on the app's port at all,
    #: served on METRICS_PORT instead. Production refuses "public".
    metrics_exposure: Literal["auto", "public", "token", "ip_allowlist", "port"] = "auto"
    #: Bearer token Prometheus sends (`authorization.credentials_file` in prometheus.yml).
    metrics_token: SecretStr | None = None
    #: Addresses or CIDR networks allowed under ip_allowlist (the client address after
    #: FORWARDED_ALLOW_IPS resolution, so a proxied public client never matches).
    metrics_allow_ips: StrList = [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
    ]
    #: The separate listener of METRICS_EXPOSURE=port (every worker binds it with
    #: SO_REUSEPORT; each answers with the sum over all workers).
    metrics_port: int = Field(default=9464, ge=1, le=65535)
    #: Bind address of that listener (default: HOST).
    metrics_host: str | None = None
    #: prometheus_client's multiprocess directory. prometheus_client reads the environment
    #: variable itself at import, so it must be in the environment of the server (the
    #: `serve` command prepares and exports it); the setting documents and validates it.
    prometheus_multiproc_dir: Path | None = None
    #: The Celery worker's own metrics listener (its main process serves the sum over its
    #: pool processes).
    worker_metrics_port: int = Field(default=9808, ge=1, le=65535)
    #: Bind address of the worker's listener (default: HOST).
    worker_metrics_host: str | None = None
    #: Sentry's environment name (default: ENVIRONMENT). Sentry is on when SENTRY_DSN is set.
    sentry_environment: str | None = None
    #: Fraction of requests and jobs Sentry traces (0 to 1).
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Fraction of traced transactions Sentry also profiles (0 to 1).
    sentry_profiles_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    #: OpenTelemetry traces over OTLP/HTTP for requests, SQL, Redis, httpx and Celery.
    otel_enabled: bool = False
    #: OTLP/HTTP base URL, e.g. http://otel-collector:4318 (default: the exporter's own,
    #: OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4318).
    otel_exporter_otlp_endpoint: str | None = None
    #: `service.name` of every span.
    otel_service_name: str = "slipway"
    #: Fraction of requests and jobs that start a trace (0 to 1); the rest follow their parent.
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    #: pyinstrument request profiler (`?profile=1`), development only; production refuses it.
    profiler_enabled: bool = False

    # --- Outbound webhooks (webhooks area) ---
    #: Whole-attempt bound of one delivery (connect, send, read the bounded response).
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    #: Bytes of a receiver's response read at most (the rest is never downloaded).
    webhook_max_response_bytes: int = Field(default=65_536, ge=0, le=10_485_760)
    #: Consecutive failed deliveries to one endpoint that open its circuit breaker.
    webhook_breaker_threshold: int = Field(default=5, ge=1, le=1000)
    #: Seconds an open breaker refuses deliveries before letting one through (half-open).
    webhook_breaker_reset_seconds: int = Field(default=60, ge=1, le=86_400)
    #: Tests only: allow webhook URLs on loopback (127.0.0.0/8, ::1). Every other private,
    #: link-local, metadata or reserved address stays refused. Production refuses it.
    webhook_allow_loopback: bool = False
    #: Registered endpoints at most: every order event fans out to each subscribed one.
    webhook_max_endpoints: int = Field(default=50, ge=1, le=1000)

    # --- Backups (ops/backup: `slipway db backup|restore`) ---
    #: Directory of pg_dump and pg_restore (default: the newest /usr/lib/postgresql/*/bin,
    #: then PATH). pg_dump must be at least the server's major version.
    backup_pg_bin_dir: Path | None = None

    # --- Secrets manager (platform/secrets_aws) ---
    #: Read settings from AWS at startup: "aws-secretsmanager" (one JSON secret) or
    #: "aws-ssm" (parameters under a path). Below environment variables and `.env`, above
    #: SECRETS_DIR files. See docs/security/secrets.md.
    secrets_backend: Literal["none", "aws-secretsmanager", "aws-ssm"] = "none"
    #: Name or ARN of the secret whose SecretString is a JSON object of settings.
    secrets_aws_secret_id: str | None = None
    #: Parameter Store path; every parameter below it named after a setting is read.
    secrets_aws_ssm_path: str | None = None
    #: Region of the secrets backend (default: boto3's, e.g. AWS_REGION).
    secrets_aws_region: str | None = None
    #: Endpoint override (VPC endpoints, or a local test server).
    secrets_aws_endpoint_url: str | None = None

    # Where Docker/Kubernetes secrets are mounted; files named after settings.
    secrets_dir: Path = Path("/run/secrets")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The secrets directory itself is configurable, so resolve it from init/env first.
        secrets_dir = Path(os.environ.get("SECRETS_DIR", "/run/secrets"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        # AWS ranks below what an operator sets on the host (environment, `.env`), so one
        # value can be overridden without editing the shared secret, and above the mounted
        # secrets directory, because it is explicitly enabled (SECRETS_DIR is on by default).
        from slipway.platform.secrets_aws import aws_settings_source, bootstrap_values

        bootstrap = bootstrap_values(dotenv_settings, env_settings, init_settings)
        aws = aws_settings_source(settings_cls, bootstrap)
        if aws is not None:
            sources.append(aws)
        if secrets_dir.is_dir():
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir))
        return tuple(sources)

    @field_validator("forwarded_allow_ips", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return normalise_database_url(value.strip())

    @field_validator("redis_url", "celery_broker_url", "smtp_host", mode="before")
    @classmethod
    def _empty_redis(cls, value: Any) -> Any:
        return value or None

    @model_validator(mode="after")
    def _jobs_and_mail_consistent(self) -> Settings:
        if self.jobs_backend == "celery" and self.jobs_broker_url is None:
            raise ValueError("JOBS_BACKEND=celery needs CELERY_BROKER_URL or REDIS_URL")
        if self.jobs_time_limit <= self.jobs_soft_time_limit:
            raise ValueError("JOBS_TIME_LIMIT must be above JOBS_SOFT_TIME_LIMIT")
        if self.smtp_tls and self.smtp_starttls:
            raise ValueError("SMTP_TLS and SMTP_STARTTLS are exclusive; set one of them")
        if self.mail_backend == "smtp" and self.smtp_host is None:
            raise ValueError("MAIL_BACKEND=smtp needs SMTP_HOST")
        return self

    @field_validator("rate_limit_paths", "rate_limit_exempt_paths", mode="before")
    @classmethod
    def _rate_limit_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("rate_limit_policies", mode="after")
    @classmethod
    def _rate_limit_policies(cls, value: dict[str, str]) -> dict[str, str]:
        return {**DEFAULT_RATE_LIMIT_POLICIES, **value}

    @field_validator("rate_limit_default", "rate_limit_policies", mode="after")
    @classmethod
    def _rate_limit_notation(cls, value: Any) -> Any:
        from limits import parse_many

        # A typo must stop the process at startup, not turn a limit off at request time.
        for text in value.values() if isinstance(value, dict) else [value]:
            parse_many(text)
        return value

    @field_validator("metrics_allow_ips", mode="before")
    @classmethod
    def _metrics_allow_ips(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("metrics_allow_ips", mode="after")
    @classmethod
    def _metrics_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # a typo stops startup
        return value

    @model_validator(mode="after")
    def _observability_consistent(self) -> Settings:
        if self.metrics_exposure == "token" and not (
            self.metrics_token and self.metrics_token.get_secret_value()
        ):
            raise ValueError("METRICS_EXPOSURE=token needs METRICS_TOKEN")
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            problems = self.production_problems()
            if problems:
                raise UnsafeSettingsError(problems)
        return self

    def production_problems(self) -> list[str]:
        """Every reason these settings are unsafe for production (empty when safe)."""
        problems: list[str] = []
        secret = self.secret_key.get_secret_value()
        if secret == DEFAULT_SECRET_KEY or len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"SECRET_KEY is the default or shorter than {MIN_SECRET_LENGTH} characters; "
                "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if self.debug:
            problems.append("DEBUG is on; set DEBUG=false")
        if self.docs_enabled is True and not self.allow_docs_in_production:
            problems.append(
                "DOCS_ENABLED is on without the explicit opt-in ALLOW_DOCS_IN_PRODUCTION=true"
            )
        if "*" in self.cors_origins:
            problems.append("CORS_ORIGINS contains '*'; list the allowed origins explicitly")
        if "*" in self.allowed_hosts:
            problems.append("ALLOWED_HOSTS contains '*'; list the served host names")
        if self.is_sqlite and not self.allow_sqlite_in_production:
            problems.append(
                "DATABASE_URL points at SQLite; use PostgreSQL "
                "or set ALLOW_SQLITE_IN_PRODUCTION=true"
            )
        if self.jobs_engine == "embedded" and not self.allow_embedded_jobs_in_production:
            problems.append(
                "background jobs have no broker (JOBS_BACKEND resolves to the in-process "
                "runner); set CELERY_BROKER_URL or REDIS_URL, or opt in with "
                "ALLOW_EMBEDDED_JOBS_IN_PRODUCTION=true"
            )
        if self.metrics_enabled and self.metrics_exposure == "public":
            problems.append(
                "METRICS_EXPOSURE=public serves /metrics to anyone; use token, ip_allowlist "
                "or port (or leave it at auto)"
            )
        if self.profiler_enabled:
            problems.append("PROFILER_ENABLED is on; the request profiler is for development")
        if self.webhook_allow_loopback:
            problems.append(
                "WEBHOOK_ALLOW_LOOPBACK is on; webhooks could reach services on this host"
            )
        if not self.refresh_cookie_secure:
            problems.append(
                "REFRESH_COOKIE_SECURE is off; the refresh cookie would travel over plain HTTP"
            )
        return problems

    @property
    def jobs_broker_url(self) -> str | None:
        """The Celery broker: CELERY_BROKER_URL, else REDIS_URL."""
        return self.celery_broker_url or self.redis_url

    @property
    def jobs_engine(self) -> Literal["celery", "embedded"]:
        """What runs background jobs once JOBS_BACKEND=auto is resolved."""
        if self.jobs_backend == "auto":
            return "celery" if self.jobs_broker_url else "embedded"
        return self.jobs_backend

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.PRODUCTION

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def docs_on(self) -> bool:
        if self.docs_enabled is not None:
            return self.docs_enabled
        return self.environment in (Environment.DEVELOPMENT, Environment.TESTING)

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if self.environment is Environment.DEVELOPMENT else "json"

    @property
    def metrics_exposure_mode(self) -> Literal["public", "token", "ip_allowlist", "port"]:
        """METRICS_EXPOSURE with "auto" resolved: public only in development and testing."""
        if self.metrics_exposure != "auto":
            return self.metrics_exposure
        if self.environment in (Environment.DEVELOPMENT, Environment.TESTING):
            return "public"
        return "token" if self.metrics_token else "ip_allowlist"

    @property
    def release(self) -> str:
        return f"{self.app_version}+{self.git_sha}" if self.git_sha else self.app_version


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (the app factory takes explicit settings too)."""
    return Settings()
