"""`slipway doctor` and `slipway probe`: the production checklist as two commands.

Both print a table (or `--format json`) and exit 1 when any check fails; warnings alone
exit 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from slipway.cli.common import app
from slipway.ops.checks import OutputFormat, emit

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table (rich) or json.")]


@app.command()
def doctor(
    output: FormatOption = OutputFormat.table,
    nginx_conf: Annotated[
        Path | None,
        typer.Option(
            help="Nginx config to compare KEEPALIVE_TIMEOUT with "
            "(default: ./deploy/nginx/nginx.conf when present).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    k8s_deployment: Annotated[
        Path | None,
        typer.Option(
            help="Kubernetes Deployment to compare GRACEFUL_TIMEOUT with "
            "(default: ./deploy/k8s/base/app-deployment.yaml when present).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="Do not connect to the database (migrations unchecked).")
    ] = False,
) -> None:
    """Audit the effective settings and environment against the production checklist."""
    from slipway.ops.doctor import DoctorContext, load_audited_settings, run_doctor

    settings, problems = load_audited_settings()
    context = DoctorContext(
        settings=settings,
        settings_problems=problems,
        nginx_conf=nginx_conf,
        k8s_deployment=k8s_deployment,
        offline=offline,
    )
    report = run_doctor(context)
    emit(report, output)
    raise typer.Exit(report.exit_code)


@app.command()
def probe(
    url: Annotated[
        str, typer.Argument(help="The deployment's base URL, e.g. https://api.example.com")
    ],
    output: FormatOption = OutputFormat.table,
    insecure: Annotated[
        bool, typer.Option("--insecure", "-k", help="Do not verify the TLS certificate.")
    ] = False,
    max_requests: Annotated[
        int, typer.Option(min=1, max=100, help="Upper bound on the HTTP requests sent.")
    ] = 30,
    http_url: Annotated[
        str | None,
        typer.Option(help="The plain-HTTP address to test the redirect on (default: port 80)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.5, max=60, help="Seconds per request.")] = 10.0,
) -> None:
    """Audit a running deployment from outside, with a bounded number of requests."""
    from slipway.ops.probe import ProbeConfig, run_probe

    try:
        config = ProbeConfig.from_url(
            url,
            insecure=insecure,
            max_requests=max_requests,
            http_url=http_url,
            timeout=timeout,
        )
    except ValueError as exc:
        typer.echo(f"slipway probe: {exc}", err=True)
        raise typer.Exit(2) from None
    report = run_probe(config)
    emit(report, output)
    raise typer.Exit(report.exit_code)
