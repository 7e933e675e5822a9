"""SECRETS_BACKEND: settings read from AWS Secrets Manager and SSM Parameter Store.

AWS is moto's standalone server (`moto_server`), a separate process answering the real
AWS HTTP APIs on a loopback port; the app reaches it through boto3 with
SECRETS_AWS_ENDPOINT_URL, exactly as it would reach AWS. Nothing is patched.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from slipway.platform.secrets_aws import SecretsSourceError
from slipway.platform.settings import Settings
from tests.integration.conftest import run_slipway, slipway_env
from tests.support.ports import LOOPBACK, free_port
from tests.support.process import ManagedProcess

REGION = "eu-west-1"
AWS_SECRET_KEY = "aws-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
AWS_DATABASE_URL = "postgres://slipway:pw@db.internal:5432/slipway"

#: Credentials moto accepts; nothing here can reach a real AWS account.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    moto_server = str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    process = ManagedProcess(
        [moto_server, "-H", LOOPBACK, "-p", str(port)],
        name="moto-server",
        log_path=tmp_path_factory.mktemp("moto") / "moto.log",
    )
    process.start()
    try:
        process.wait_for_http(f"http://{LOOPBACK}:{port}/moto-api/", timeout=60)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint)


def create_secret(endpoint: str, values: dict[str, str]) -> str:
    name = f"slipway/test/{uuid.uuid4().hex[:10]}"
    client("secretsmanager", endpoint).create_secret(Name=name, SecretString=json.dumps(values))
    return name


def put_parameters(endpoint: str, values: dict[str, str]) -> str:
    path = f"/slipway/{uuid.uuid4().hex[:10]}"
    ssm = client("ssm", endpoint)
    for name, value in values.items():
        ssm.put_parameter(Name=f"{path}/{name}", Value=value, Type="SecureString")
    return path


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings as a process would read them: from the environment, no .env file."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_secrets_manager_supplies_secret_key_and_database_url(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_id = create_secret(
        aws_env, {"SECRET_KEY": AWS_SECRET_KEY, "database_url": AWS_DATABASE_URL}
    )

    settings = load(
        monkeypatch,
        SECRETS_BACKEND="aws-secretsmanager",
        SECRETS_AWS_SECRET_ID=secret_id,
        SECRETS_AWS_ENDPOINT_URL=aws_env,
    )

    assert settings.secret_key.get_secret_value() == AWS_SECRET_KEY
    # Values go through the same validators as the environment's: the URL is rewritten.
    assert settings.database_url == "postgresql+asyncpg://slipway:pw@db.internal:5432/slipway"


def test_parameter_store_path_supplies_settings(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = put_parameters(
        aws_env,
        {
            "SECRET_KEY": AWS_SECRET_KEY,
            "DATABASE_URL": AWS_DATABASE_URL,
            "allowed_hosts": "api.example.com,www.example.com",
        },
    )

    settings = load(
        monkeypatch,
        SECRETS_BACKEND="aws-ssm",
        SECRETS_AWS_SSM_PATH=path,
        SECRETS_AWS_REGION=REGION,
        SECRETS_AWS_ENDPOINT_URL=aws_env,
    )

    assert settings.secret_key.get_secret_value() == AWS_SECRET_KEY
    assert settings.database_url.startswith("postgresql+asyncpg://slipway:pw@db.internal")
    assert settings.allowed_hosts == ["api.example.com", "www.example.com"]


def test_production_starts_with_its_secrets_from_aws(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = {
        "ENVIRONMENT": "production",
        "ALLOWED_HOSTS": "api.example.com",
        "REDIS_URL": "redis://cache.internal:6379/0",
    }
    # Without the backend, production refuses the default key and SQLite.
    with pytest.raises(ValidationError) as refused:
        load(monkeypatch, **production)
    assert "SECRET_KEY is the default" in str(refused.value)
    assert "DATABASE_URL points at SQLite" in str(refused.value)

    secret_id = create_secret(
        aws_env, {"SECRET_KEY": AWS_SECRET_KEY, "DATABASE_URL": AWS_DATABASE_URL}
    )
    settings = load(
        monkeypatch,
        **production,
        SECRETS_BACKEND="aws-secretsmanager",
        SECRETS_AWS_SECRET_ID=secret_id,
        SECRETS_AWS_ENDPOINT_URL=aws_env,
    )
    assert settings.is_production
    assert settings.production_problems() == []
    assert settings.secret_key.get_secret_value() == AWS_SECRET_KEY


def test_precedence_init_env_dotenv_aws_secrets_dir_defaults(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each layer holds a value for the field it should win, and for every field below it."""
    secret_id = create_secret(
        aws_env,
        {
            "APP_NAME": "from-aws",
            "GIT_SHA": "from-aws",
            "MAIL_FROM": "from-aws",
            "PUBLIC_BASE_URL": "https://from-aws.example.com",
        },
    )
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("app_name", "git_sha", "mail_from", "public_base_url", "otel_service_name"):
        (secrets_dir / name).write_text("from-secrets-dir", encoding="utf-8")
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "APP_NAME=from-dotenv\nGIT_SHA=from-dotenv\nMAIL_FROM=from-dotenv\n", encoding="utf-8"
    )
    monkeypatch.setenv("SECRETS_DIR", str(secrets_dir))
    monkeypatch.setenv("APP_NAME", "from-env")
    monkeypatch.setenv("GIT_SHA", "from-env")
    monkeypatch.setenv("SECRETS_BACKEND", "aws-secretsmanager")
    monkeypatch.setenv("SECRETS_AWS_SECRET_ID", secret_id)
    monkeypatch.setenv("SECRETS_AWS_ENDPOINT_URL", aws_env)

    settings = Settings(_env_file=dotenv, app_name="from-init")  # type: ignore[call-arg]

    assert settings.app_name == "from-init"
    assert settings.git_sha == "from-env"
    assert settings.mail_from == "from-dotenv"
    assert settings.public_base_url == "https://from-aws.example.com"
    assert settings.otel_service_name == "from-secrets-dir"
    assert settings.jwt_issuer == "slipway"  # the default, set nowhere


def test_backend_settings_come_from_dotenv_too(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_id = create_secret(aws_env, {"APP_NAME": "from-aws"})
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"SECRETS_BACKEND=aws-secretsmanager\nSECRETS_AWS_SECRET_ID={secret_id}\n"
        f"SECRETS_AWS_ENDPOINT_URL={aws_env}\n",
        encoding="utf-8",
    )
    assert Settings(_env_file=dotenv).app_name == "from-aws"  # type: ignore[call-arg]


def test_disabled_by_default_and_never_calls_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # An endpoint nothing listens on: any call would fail the construction.
    monkeypatch.setenv("SECRETS_AWS_ENDPOINT_URL", f"http://{LOOPBACK}:{free_port()}")
    settings = load(monkeypatch, SECRETS_AWS_SECRET_ID="unused")
    assert settings.secrets_backend == "none"
    assert settings.app_name == "Slipway"


def test_unreadable_secret_stops_startup_with_a_readable_error(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SecretsSourceError, match="aws-secretsmanager: cannot read settings"):
        load(
            monkeypatch,
            SECRETS_BACKEND="aws-secretsmanager",
            SECRETS_AWS_SECRET_ID="slipway/does-not-exist",
            SECRETS_AWS_ENDPOINT_URL=aws_env,
        )


def test_misconfigured_backends_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SecretsSourceError, match="needs SECRETS_AWS_SECRET_ID"):
        load(monkeypatch, SECRETS_BACKEND="aws-secretsmanager")
    monkeypatch.delenv("SECRETS_BACKEND")
    with pytest.raises(SecretsSourceError, match="needs SECRETS_AWS_SSM_PATH"):
        load(monkeypatch, SECRETS_BACKEND="aws-ssm")


def test_a_secret_that_is_not_a_json_object_is_refused(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"slipway/plain/{uuid.uuid4().hex[:8]}"
    client("secretsmanager", aws_env).create_secret(Name=name, SecretString="just-a-password")
    with pytest.raises(SecretsSourceError, match="SecretString is not a JSON object"):
        load(
            monkeypatch,
            SECRETS_BACKEND="aws-secretsmanager",
            SECRETS_AWS_SECRET_ID=name,
            SECRETS_AWS_ENDPOINT_URL=aws_env,
        )


def test_cli_reports_an_unreadable_backend_without_a_traceback(
    aws_env: str, tmp_path: Path
) -> None:
    env = slipway_env(
        **FAKE_AWS,
        SECRETS_BACKEND="aws-ssm",
        SECRETS_AWS_SSM_PATH="no-leading-slash",
        SECRETS_AWS_ENDPOINT_URL=aws_env,
    )
    result = run_slipway(["version"], cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SECRETS_BACKEND=aws-ssm" in result.stderr
    assert "Traceback" not in result.stderr
