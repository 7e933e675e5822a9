"""Shared helpers of the deployment validator tests: where the files are, finding each
validator (a Python tool in this environment, or an OS binary installed with apt when
missing), running it with a time bound, and reading YAML/JSON.

A missing validator skips its tests locally and fails them under CI=true
(tests.support.services.require_or_skip): a skipped validator proves nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support.process import ensure_binary, require_or_skip

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

#: Every validator run is bounded; none of them needs more than a few seconds.
TOOL_TIMEOUT = 120.0

#: The image every deployment target runs (CI pushes it, tagged with the commit sha).
IMAGE = "ghcr.io/OWNER/slipway"

#: The contract's process commands (docs/deploy/README.md).
WEB_GUNICORN = ["slipway", "serve", "--server", "gunicorn"]
WEB_UVICORN = ["slipway", "serve", "--server", "uvicorn"]
MIGRATE = ["slipway", "migrate"]
WORKER = ["slipway", "worker"]
BEAT = ["slipway", "beat"]
HEALTHCHECK = ["slipway", "healthcheck"]

#: The app's default graceful timeout (GRACEFUL_TIMEOUT), which stop timeouts must exceed.
GRACEFUL_TIMEOUT = 20


def python_tool(name: str) -> str:
    """A console script installed in this environment (cfn-lint, actionlint, ...)."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        require_or_skip(f"{name} is not installed: run `uv sync --all-groups`")
    return found


def os_tool(name: str, apt_package: str) -> str:
    """An OS binary, installed from `apt_package` when missing and allowed."""
    found = ensure_binary(name, apt_package, search_dirs=[Path("/usr/sbin"), Path("/sbin")])
    if found is None:
        require_or_skip(f"{name} is not installed (Debian package {apt_package})")
    return found


def run(
    command: Sequence[str],
    *,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a validator; the caller asserts on the return code and output."""
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def report(result: subprocess.CompletedProcess[str]) -> str:
    """The command and its output, for assertion messages."""
    return f"$ {' '.join(result.args)}\nexit {result.returncode}\n{result.stdout}{result.stderr}"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def vendored_schema(name: str) -> dict[str, Any]:
    """A JSON schema that check-jsonschema ships (compose-spec, dependabot, workflows)."""
    from importlib.resources import files

    resource = files("check_jsonschema.builtin_schemas.vendor").joinpath(f"{name}.json")
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def schema_errors(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Every validation error as 'path: message' (empty when valid)."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    ]


def split_command(value: str | Sequence[str]) -> list[str]:
    """A command as argv, whether written as a list or as one shell-free string."""
    if isinstance(value, str):
        return value.split()
    return list(value)


def env_list_to_dict(items: Sequence[Mapping[str, Any]], key: str, value: str) -> dict[str, Any]:
    """[{name: X, value: Y}, ...] -> {X: Y} (Kubernetes, ECS and DigitalOcean shapes)."""
    return {item[key]: item.get(value) for item in items}


# --- Compose interpolation -------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (${VAR:?message}) is unset, as `docker compose` reports."""


def interpolate(value: Any, environment: Mapping[str, str]) -> Any:
    """Compose's variable interpolation (the subset of the spec these files use): $VAR,
    ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt},
    $$ for a literal dollar. Applied to every string in the parsed document."""
    if isinstance(value, dict):
        return {key: interpolate(item, environment) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environment) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        current = environment.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            use_default = unset_or_empty if op == ":-" else current is None
            return arg if use_default else str(current)
        if op in (":?", "?"):
            missing = unset_or_empty if op == ":?" else current is None
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return str(current)
        if op in (":+", "+"):
            present = not unset_or_empty if op == ":+" else current is not None
            return arg if present else ""
        return current or ""

    return _VARIABLE.sub(substitute, value)


# --- the app's settings, as each platform configures them ------------------------------

#: Variables the platform files may set that are not Settings fields: read by the server
#: (gunicorn.conf.py), prometheus_client, the entrypoint, or Python itself.
NON_SETTINGS_ENV = frozenset(
    {
        "WEB_CONCURRENCY",
        "PROMETHEUS_MULTIPROC_DIR",
        "METRICS_PORT",
        "PYTHONPATH",
        "MIGRATE_ON_START",
    }
)

#: Valid stand-ins for the values that live in a platform's secret store.
SECRET_VALUES = {
    "SECRET_KEY": "deploy-test-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "DATABASE_URL": "postgresql+asyncpg://slipway:password@db.internal:5432/slipway",
    "REDIS_URL": "redis://cache.internal:6379/0",
}


def unknown_settings(names: Sequence[str] | set[str]) -> set[str]:
    """Names that neither Settings nor the process reads: typos, or settings that do not
    exist (a platform file setting them configures nothing)."""
    from slipway.platform.settings import Settings

    known = {name.upper() for name in Settings.model_fields}
    return {name for name in names if name.upper() not in known} - NON_SETTINGS_ENV


def settings_from(
    monkeypatch: Any,
    environment: Mapping[str, Any],
    *,
    secrets_dir: Path | None = None,
) -> Any:
    """Build the app's Settings exactly as a process on the platform would: these variables
    in the environment, nothing else, secrets (if any) as files in SECRETS_DIR. Production
    settings that are unsafe raise UnsafeSettingsError."""
    from slipway.platform.settings import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, "" if value is None else str(value))
    monkeypatch.setenv("SECRETS_DIR", str(secrets_dir or "/nonexistent-slipway-secrets"))
    return Settings(_env_file=None)  # type: ignore[call-arg]


def write_secrets(directory: Path, names: Sequence[str]) -> Path:
    """Secret files named like the settings (what Docker/Kubernetes mount)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text(SECRET_VALUES[name.upper()], encoding="utf-8")
    return directory
