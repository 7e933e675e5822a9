"""`slipway serve`, `migrate`, `openapi`, `version`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from slipway.cli.common import app, load_settings


class Server(StrEnum):
    uvicorn = "uvicorn"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: PORT).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: WORKERS).")
    ] = None,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
    server: Annotated[Server, typer.Option(help="ASGI server.")] = Server.uvicorn,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from slipway.platform.logging import configure_logging, uvicorn_log_config

    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    if reload and settings.is_production:
        typer.echo("slipway: --reload is refused in production", err=True)
        raise typer.Exit(2)
    if not settings.is_production and settings.is_sqlite:
        # One-command start: bring the embedded database to head. Production never
        # migrates implicitly; it runs `slipway migrate` as its own step.
        from slipway.platform.db.migrate import upgrade_head

        upgrade_head(settings)

    uvicorn.run(
        "slipway.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=None if reload else (workers or settings.workers),
        reload=reload,
        loop="uvloop",
        http="httptools",
        # Proxy headers are resolved inside the app (FORWARDED_ALLOW_IPS) for every server.
        proxy_headers=False,
        server_header=False,
        date_header=True,
        access_log=False,
        log_config=uvicorn_log_config(),
        log_level=settings.log_level.lower(),
        timeout_keep_alive=settings.keepalive_timeout,
        # uvicorn waits forever for in-flight work unless this is set (ERRATA).
        timeout_graceful_shutdown=settings.graceful_timeout,
    )


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (under a PostgreSQL advisory lock)."""
    from slipway.platform.db.migrate import upgrade
    from slipway.platform.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    upgrade(settings, revision)


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from slipway.app import create_app

    settings = load_settings(docs_enabled=True, log_level="WARNING")
    schema = create_app(settings).openapi()
    text = json.dumps(schema, indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


@app.command()
def version() -> None:
    """Print the version."""
    settings = load_settings()
    typer.echo(f"{settings.app_name} {settings.release}")
