"""`slipway serve`, `migrate`, `openapi`, `version`."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from slipway.cli.common import app, fail_as_log_line, load_settings

#: How long uvicorn's supervisor waits for a (re)started worker to serve.
WORKER_READY_TIMEOUT_SECONDS = 30


class Server(StrEnum):
    #: One process per container (Kubernetes, Cloud Run); uvicorn's own supervisor runs
    #: --workers N, restarting dead workers.
    uvicorn = "uvicorn"
    #: The gunicorn master with uvicorn workers (VMs, Compose): zero-downtime SIGHUP
    #: reloads, worker recycling. Configured by slipway.serving.gunicorn_conf.
    gunicorn = "gunicorn"
    #: HTTP/2 by ALPN under TLS (--certfile/--keyfile). slipway.serving.hypercorn_app.
    hypercorn = "hypercorn"
    #: A Rust HTTP server, compared in benchmarks/. slipway.serving.granian_app.
    granian = "granian"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: PORT).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: WORKERS; gunicorn: WEB_CONCURRENCY, else CPUs).",
        ),
    ] = None,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
    server: Annotated[Server, typer.Option(help="ASGI server.")] = Server.uvicorn,
    certfile: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="TLS certificate (hypercorn, granian)."),
    ] = None,
    keyfile: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="TLS private key (hypercorn, granian)."),
    ] = None,
) -> None:
    """Run the HTTP server."""
    import uvicorn

    from slipway.platform.logging import configure_logging, uvicorn_log_config

    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    if reload and settings.is_production:
        typer.echo("slipway: --reload is refused in production", err=True)
        raise typer.Exit(2)
    if reload and server is not Server.uvicorn:
        typer.echo("slipway: --reload is for development; use --server uvicorn", err=True)
        raise typer.Exit(2)
    if (certfile or keyfile) and server not in (Server.hypercorn, Server.granian):
        # uvicorn and gunicorn serve behind a TLS-terminating proxy or platform router.
        typer.echo("slipway: --certfile/--keyfile need --server hypercorn or granian", err=True)
        raise typer.Exit(2)
    if (certfile is None) != (keyfile is None):
        typer.echo("slipway: --certfile and --keyfile go together", err=True)
        raise typer.Exit(2)
    if not settings.is_production and settings.is_sqlite:
        # One-command start: bring the embedded database to head. Production never
        # migrates implicitly; it runs `slipway migrate` as its own step.
        from slipway.platform.db.migrate import upgrade_head

        with fail_as_log_line("migrate_failed", revision="head"):
            upgrade_head(settings)

    if server is Server.gunicorn:
        from slipway.serving import gunicorn_app

        bind = gunicorn_app.bind_address(host or settings.host, port or settings.port)
        gunicorn_app.run(bind=bind if host or port else None, workers=workers)
        return
    if server in (Server.hypercorn, Server.granian):
        from slipway.platform.metrics import prepare_multiprocess_dir
        from slipway.serving import granian_app, hypercorn_app

        prepare_multiprocess_dir()
        run_server = hypercorn_app.run if server is Server.hypercorn else granian_app.run
        run_server(
            settings,
            host=host or settings.host,
            port=port or settings.port,
            workers=workers or settings.workers,
            certfile=certfile,
            keyfile=keyfile,
        )
        return

    # Several uvicorn workers share PROMETHEUS_MULTIPROC_DIR: empty it before they start
    # (gunicorn does this in its on_starting hook).
    from slipway.platform.metrics import prepare_multiprocess_dir
    from slipway.serving.protocol import HTTP_PROTOCOL

    prepare_multiprocess_dir()
    uvicorn.run(
        "slipway.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=None if reload else (workers or settings.workers),
        reload=reload,
        loop="uvloop",
        # httptools, draining idle keep-alive connections at shutdown (no resets on SIGHUP).
        http=HTTP_PROTOCOL,
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
        # --workers N: SIGHUP replaces workers one by one, each only after its replacement
        # is ready. uvicorn's 5 s default for "ready" is shorter than a worker's start on a
        # busy 2-core host, and a late replacement aborts the whole reload.
        timeout_worker_healthcheck=WORKER_READY_TIMEOUT_SECONDS,
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
    with fail_as_log_line("migrate_failed", revision=revision):
        upgrade(settings, revision)


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write the OpenAPI schema as JSON."""
    from slipway.app import create_app

    # The schema does not depend on DOCS_ENABLED (that only hides the pages), so the export
    # also works with a production configuration, where forcing docs on would be refused.
    settings = load_settings(log_level="WARNING")
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
