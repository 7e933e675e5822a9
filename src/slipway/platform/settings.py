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
            return "postgresql+asyncpg://" + url[len(prefix) :]
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

    # Application
    app_name: str = "Slipway"
    app_version: str = Field(default_factory=_package_version)
    git_sha: str | None = None
    debug: bool = False
    environment: Environment = Environment.DEVELOPMENT

    # Server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    forwarded_allow_ips: StrList = ["127.0.0.1", "::1"]
    #: Seconds the server waits for in-flight requests at shutdown before cancelling them.
    graceful_timeout: int = Field(default=20, ge=1, le=300)
    #: Must stay above the proxy's upstream idle timeout (Nginx: keepalive_timeout 60s).
    keepalive_timeout: int = Field(default=75, ge=1, le=3600)

    # Database
    database_url: str = "sqlite+aiosqlite:///./slipway.db"
    allow_sqlite_in_production: bool = False
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    db_pool_timeout: float = Field(default=10.0, gt=0, le=300)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_echo: bool = False
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)

    # Redis
    redis_url: str | None = None
    redis_required: bool = False

    # Security
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

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] | None = None

    # Error tracking
    sentry_dsn: SecretStr | None = None

    # Mail
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_tls: bool = False
    smtp_timeout: float = Field(default=10.0, gt=0)
    mail_from: str = "Slipway <no-reply@slipway.local>"

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

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_redis(cls, value: Any) -> Any:
        return value or None

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
        return problems

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
    def release(self) -> str:
        return f"{self.app_version}+{self.git_sha}" if self.git_sha else self.app_version


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (the app factory takes explicit settings too)."""
    return Settings()
