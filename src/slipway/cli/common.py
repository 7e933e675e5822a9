"""Shared CLI plumbing: the typer app and settings loading with readable refusals."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
import typer
from pydantic import ValidationError

from slipway.platform.settings import Settings, UnsafeSettingsError

app = typer.Typer(
    name="slipway",
    help="Slipway: a production-grade FastAPI service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def load_settings(**overrides: object) -> Settings:
    """Load settings or exit non-zero naming every problem (never a traceback)."""
    from slipway.platform.secrets_aws import SecretsSourceError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SecretsSourceError as exc:
        typer.echo(f"slipway: invalid configuration:\n  - {exc}", err=True)
        sys.exit(2)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            ctx_error = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_error, UnsafeSettingsError):
                problems.extend(ctx_error.problems)
            else:
                field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
                problems.append(f"{field}: {err['msg']}")
        typer.echo("slipway: invalid configuration:", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)
        sys.exit(2)


@contextmanager
def fail_as_log_line(event: str, **fields: Any) -> Iterator[None]:
    """Exit 1 with the traceback as one log line (JSON under LOG_FORMAT=json), not raw stderr.

    Use after `configure_logging`, around steps that fail on the environment (migrations).
    """
    try:
        yield
    except typer.Exit:
        raise
    except Exception:
        structlog.get_logger("slipway.cli").exception(event, **fields)
        raise typer.Exit(1) from None
