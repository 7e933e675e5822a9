"""Settings from AWS Secrets Manager or SSM Parameter Store (SECRETS_BACKEND).

The fetching and parsing are pydantic-settings' own AWS sources (they behave exactly like
environment variables: same names, same parsing of lists and JSON); this module decides
whether one is enabled, builds it from the bootstrap settings and turns AWS failures into
one readable startup error. Nothing is fetched unless SECRETS_BACKEND names a backend, and
an enabled backend that cannot be read stops the process: silently falling back to the
defaults would start production with the wrong database or a sample secret key.

- aws-secretsmanager: SECRETS_AWS_SECRET_ID names one secret whose SecretString is a JSON
  object, {"SECRET_KEY": "...", "DATABASE_URL": "..."}; keys are setting names, any case.
- aws-ssm: every parameter under SECRETS_AWS_SSM_PATH (recursive, SecureString decrypted),
  named after a setting: /slipway/prod/SECRET_KEY, /slipway/prod/database_url.

Credentials and the default region come from boto3's usual chain (task or instance role,
AWS_* variables); SECRETS_AWS_REGION and SECRETS_AWS_ENDPOINT_URL override them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic_settings import PydanticBaseSettingsSource

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

SecretsBackend = Literal["none", "aws-secretsmanager", "aws-ssm"]
BACKENDS: tuple[SecretsBackend, ...] = ("none", "aws-secretsmanager", "aws-ssm")

#: The settings that configure this source. They are read before the source exists, from
#: the sources that outrank it (init kwargs, environment, `.env`), never from AWS itself.
BOOTSTRAP_FIELDS = (
    "secrets_backend",
    "secrets_aws_secret_id",
    "secrets_aws_ssm_path",
    "secrets_aws_region",
    "secrets_aws_endpoint_url",
)


class SecretsSourceError(RuntimeError):
    """The enabled secrets backend is misconfigured or could not be read."""


def bootstrap_values(*sources: PydanticBaseSettingsSource) -> dict[str, Any]:
    """The source's own settings, from `sources` in increasing precedence."""
    merged: dict[str, Any] = {}
    for source in sources:
        values = source()
        merged.update({key: values[key] for key in BOOTSTRAP_FIELDS if key in values})
    return merged


def _text(values: Mapping[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def aws_settings_source(
    settings_cls: type[BaseSettings], values: Mapping[str, Any]
) -> PydanticBaseSettingsSource | None:
    """The AWS source SECRETS_BACKEND asks for (fetched now), or None when disabled."""
    backend = (_text(values, "secrets_backend") or "none").lower()
    if backend == "none":
        return None
    if backend not in BACKENDS:
        raise SecretsSourceError(f"SECRETS_BACKEND={backend!r} is not one of {', '.join(BACKENDS)}")
    region = _text(values, "secrets_aws_region")
    endpoint_url = _text(values, "secrets_aws_endpoint_url")
    try:
        import boto3  # noqa: F401 - only to give the missing extra a clear message
    except ImportError as error:
        raise SecretsSourceError(
            f"SECRETS_BACKEND={backend} needs boto3: install slipway[aws]"
        ) from error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        if backend == "aws-secretsmanager":
            return _secrets_manager_source(settings_cls, values, region, endpoint_url)
        return _parameter_store_source(settings_cls, values, region, endpoint_url)
    except (BotoCoreError, ClientError) as error:
        # The message names the backend and AWS's reason, never a fetched value.
        raise SecretsSourceError(
            f"SECRETS_BACKEND={backend}: cannot read settings: {error}"
        ) from error


def _secrets_manager_source(
    settings_cls: type[BaseSettings],
    values: Mapping[str, Any],
    region: str | None,
    endpoint_url: str | None,
) -> PydanticBaseSettingsSource:
    from pydantic_settings import AWSSecretsManagerSettingsSource

    secret_id = _text(values, "secrets_aws_secret_id")
    if secret_id is None:
        raise SecretsSourceError("SECRETS_BACKEND=aws-secretsmanager needs SECRETS_AWS_SECRET_ID")
    try:
        # Setting names are case-insensitive everywhere else, so here too; no nested
        # delimiter: Slipway's settings are flat.
        return AWSSecretsManagerSettingsSource(
            settings_cls,
            secret_id=secret_id,
            region_name=region,
            endpoint_url=endpoint_url,
            case_sensitive=False,
            env_nested_delimiter="",
        )
    except (ValueError, AttributeError) as error:  # not JSON, or JSON but not an object
        raise SecretsSourceError(
            "SECRETS_BACKEND=aws-secretsmanager: the secret's SecretString is not a JSON "
            f"object of settings ({type(error).__name__})"
        ) from error


def _parameter_store_source(
    settings_cls: type[BaseSettings],
    values: Mapping[str, Any],
    region: str | None,
    endpoint_url: str | None,
) -> PydanticBaseSettingsSource:
    from pydantic_settings import AWSSystemsManagerSettingsSource

    path = _text(values, "secrets_aws_ssm_path")
    if path is None:
        raise SecretsSourceError("SECRETS_BACKEND=aws-ssm needs SECRETS_AWS_SSM_PATH")
    if not path.startswith("/"):
        raise SecretsSourceError(
            f"SECRETS_BACKEND=aws-ssm: SECRETS_AWS_SSM_PATH must start with '/': {path!r}"
        )
    return AWSSystemsManagerSettingsSource(
        settings_cls,
        ssm_path=path,
        region_name=region,
        endpoint_url=endpoint_url,
        case_sensitive=False,
        env_nested_delimiter="",
    )
