"""Shared CLI plumbing: the typer app and settings loading with readable refusals."""

from __future__ import annotations

import sys

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
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
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
