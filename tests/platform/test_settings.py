"""Settings: source precedence, URL rewriting, list parsing and the production refusal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from slipway.platform.settings import (
    DEFAULT_SECRET_KEY,
    Environment,
    Settings,
    UnsafeSettingsError,
)

GOOD_SECRET = "p" * 48
PG_URL = "postgresql+asyncpg://app:pw@db.internal:5432/slipway"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting leaks in from the machine: no env var, no .env, no secrets directory."""
    fields = {name.upper() for name in Settings.model_fields}
    for key in list(os.environ):
        if key.upper() in fields:
            monkeypatch.delenv(key)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets-here"))
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def production(**overrides: Any) -> Settings:
    """A valid production configuration, with `overrides` applied on top."""
    values: dict[str, Any] = {
        "environment": "production",
        "secret_key": GOOD_SECRET,
        "database_url": PG_URL,
        "redis_url": "redis://cache.internal:6379/0",
        "allowed_hosts": ["api.example.com"],
        "cors_origins": ["https://app.example.com"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def refusal(**overrides: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        production(**overrides)
    causes = [err.get("ctx", {}).get("error") for err in caught.value.errors()]
    unsafe = [cause for cause in causes if isinstance(cause, UnsafeSettingsError)]
    assert len(unsafe) == 1, caught.value
    # The message users read names every problem too, not only the structured list.
    for problem in unsafe[0].problems:
        assert problem in str(caught.value)
    return unsafe[0].problems


# --- sources --------------------------------------------------------------------------------


def write_secret(directory: Path, name: str, value: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(value)


def test_secrets_directory_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environment: Path
) -> None:
    secrets = tmp_path / "secrets"
    write_secret(secrets, "secret_key", "from-secrets-dir-" + "x" * 32)
    write_secret(secrets, "app_name", "FromSecrets")
    monkeypatch.setenv("SECRETS_DIR", str(secrets))

    settings = Settings()

    assert settings.secret_key.get_secret_value() == "from-secrets-dir-" + "x" * 32
    assert settings.app_name == "FromSecrets"


def test_dotenv_beats_secrets_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environment: Path
) -> None:
    secrets = tmp_path / "secrets"
    write_secret(secrets, "secret_key", "from-secrets-dir-" + "x" * 32)
    write_secret(secrets, "app_name", "FromSecrets")
    monkeypatch.setenv("SECRETS_DIR", str(secrets))
    (clean_environment / ".env").write_text("APP_NAME=FromDotenv\n")

    settings = Settings()

    assert settings.app_name == "FromDotenv"
    # A key only the secrets directory sets still comes from there.
    assert settings.secret_key.get_secret_value().startswith("from-secrets-dir-")


def test_environment_beats_dotenv_and_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environment: Path
) -> None:
    secrets = tmp_path / "secrets"
    write_secret(secrets, "app_name", "FromSecrets")
    write_secret(secrets, "port", "7001")
    monkeypatch.setenv("SECRETS_DIR", str(secrets))
    (clean_environment / ".env").write_text("APP_NAME=FromDotenv\nPORT=7002\nLOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("APP_NAME", "FromEnv")

    settings = Settings()

    assert settings.app_name == "FromEnv"
    assert settings.port == 7002
    assert settings.log_level == "DEBUG"


def test_missing_secrets_directory_is_not_an_error(clean_environment: Path) -> None:
    settings = Settings()

    assert settings.secret_key.get_secret_value() == DEFAULT_SECRET_KEY
    assert settings.environment is Environment.DEVELOPMENT


def test_plain_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("MAX_BODY_SIZE", "4096")
    monkeypatch.setenv("LOG_FORMAT", "console")

    settings = Settings()

    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.redis_url == "redis://127.0.0.1:6399/0"
    assert settings.secret_key.get_secret_value() == GOOD_SECRET
    assert settings.environment is Environment.STAGING
    assert settings.max_body_size == 4096
    assert settings.effective_log_format == "console"


def test_log_format_defaults_by_environment() -> None:
    assert Settings(environment="development").effective_log_format == "console"
    assert Settings(environment="staging").effective_log_format == "json"


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql://u:p@h:5432/db", "postgresql+asyncpg://u:p@h:5432/db"),
        ("postgresql+asyncpg://u:p@h/db", "postgresql+asyncpg://u:p@h/db"),
        ("sqlite:///./x.db", "sqlite+aiosqlite:///./x.db"),
    ],
)
def test_database_url_rewritten_to_async_driver(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)

    assert Settings().database_url == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["a.example.com", "b.example.com"]', ["a.example.com", "b.example.com"]),
        ("a.example.com, b.example.com", ["a.example.com", "b.example.com"]),
        ("a.example.com", ["a.example.com"]),
        ("", []),
    ],
)
def test_list_settings_accept_json_and_commas(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", raw)
    monkeypatch.setenv("CORS_ORIGINS", raw)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", raw)

    settings = Settings()

    assert settings.allowed_hosts == expected
    assert settings.cors_origins == expected
    assert settings.forwarded_allow_ips == expected


def test_list_settings_from_dotenv(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        'CORS_ORIGINS=["https://a.example.com","https://b.example.com"]\n'
        "FORWARDED_ALLOW_IPS=10.0.0.1,10.0.0.2\n"
    )

    settings = Settings()

    assert settings.cors_origins == ["https://a.example.com", "https://b.example.com"]
    assert settings.forwarded_allow_ips == ["10.0.0.1", "10.0.0.2"]


def test_empty_redis_url_means_no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")

    assert Settings().redis_url is None


# --- production refusal ---------------------------------------------------------------------


def test_valid_production_configuration_passes() -> None:
    settings = production()

    assert settings.is_production
    assert settings.production_problems() == []
    assert settings.docs_on is False


def test_valid_production_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("DATABASE_URL", "postgres://app:pw@db.internal:5432/slipway")
    monkeypatch.setenv("ALLOWED_HOSTS", "api.example.com")
    monkeypatch.setenv("REDIS_URL", "redis://cache.internal:6379/0")

    settings = Settings()

    assert settings.is_production
    assert settings.database_url.startswith("postgresql+asyncpg://")


def test_sqlite_in_production_with_opt_in_passes() -> None:
    settings = production(
        database_url="sqlite+aiosqlite:///./prod.db", allow_sqlite_in_production=True
    )

    assert settings.is_sqlite


def test_docs_in_production_with_opt_in_passes() -> None:
    settings = production(docs_enabled=True, allow_docs_in_production=True)

    assert settings.docs_on is True


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"secret_key": DEFAULT_SECRET_KEY}, "SECRET_KEY"),
        ({"secret_key": "short-but-not-default"}, "SECRET_KEY"),
        ({"debug": True}, "DEBUG"),
        ({"docs_enabled": True}, "ALLOW_DOCS_IN_PRODUCTION"),
        ({"cors_origins": ["*"]}, "CORS_ORIGINS"),
        ({"allowed_hosts": ["api.example.com", "*"]}, "ALLOWED_HOSTS"),
        ({"database_url": "sqlite+aiosqlite:///./prod.db"}, "ALLOW_SQLITE_IN_PRODUCTION"),
    ],
    ids=["default-secret", "short-secret", "debug", "docs", "cors", "hosts", "sqlite"],
)
def test_production_refuses_each_problem(overrides: dict[str, Any], names: str) -> None:
    problems = refusal(**overrides)

    assert len(problems) == 1
    assert names in problems[0]


def test_production_names_every_problem_at_once() -> None:
    problems = refusal(
        secret_key=DEFAULT_SECRET_KEY,
        debug=True,
        docs_enabled=True,
        cors_origins=["*"],
        allowed_hosts=["*"],
        database_url="sqlite+aiosqlite:///./prod.db",
    )

    text = "\n".join(problems)
    assert len(problems) == 6
    for name in (
        "SECRET_KEY",
        "DEBUG",
        "DOCS_ENABLED",
        "CORS_ORIGINS",
        "ALLOWED_HOSTS",
        "ALLOW_SQLITE_IN_PRODUCTION",
    ):
        assert name in text


def test_production_with_only_defaults_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")

    with pytest.raises(ValidationError) as caught:
        Settings()

    message = str(caught.value)
    assert "SECRET_KEY" in message
    assert "ALLOW_SQLITE_IN_PRODUCTION" in message


def test_refusal_does_not_print_the_secret() -> None:
    short = "tiny-secret-value"

    problems = refusal(secret_key=short)

    assert all(short not in problem for problem in problems)


def test_other_environments_are_not_refused() -> None:
    settings = Settings(environment="staging", debug=True, cors_origins=["*"])

    # The problems are still known (for diagnostics); only production refuses to start.
    problems = "\n".join(settings.production_problems())
    for name in ("SECRET_KEY", "DEBUG", "CORS_ORIGINS"):
        assert name in problems
    assert settings.environment is Environment.STAGING
