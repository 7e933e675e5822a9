"""`slipway healthcheck`: the container HEALTHCHECK (Docker, Compose, ECS).

Slim images have no curl and no `requests` (ERRATA: 004's HEALTHCHECK calls `requests`,
which is not installed); this probe uses the standard library only and reads the port from
the environment without loading (and validating) the application's settings, so it
answers in a fraction of a second even on a misconfigured container.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Annotated

import typer

from slipway.cli.common import app

READY_PATH = "/health/ready"
DEFAULT_PORT = "8000"
#: Wildcard binds are probed over loopback.
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}
#: Sent as the Host header. The app exempts /health from its host check, but a stricter
#: setup (another host filter, an older release) still accepts `localhost`: the default
#: settings and the deployment manifests list it for this probe.
PROBE_HOST_HEADER = "localhost"


def default_url() -> str:
    """http://HOST:PORT/health/ready, loopback when HOST is a wildcard address."""
    host = os.environ.get("HOST", "").strip()
    if host in _WILDCARDS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = os.environ.get("PORT", "").strip() or DEFAULT_PORT
    return f"http://{host}:{port}{READY_PATH}"


def probe(url: str, timeout: float, host_header: str | None = None) -> tuple[bool, str]:
    """(healthy, reason): healthy only on a 200 answer within `timeout` seconds."""
    if not url.startswith(("http://", "https://")):
        return False, f"not an http(s) URL: {url}"
    headers = {"Host": host_header} if host_header else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status: int = response.status
    except urllib.error.HTTPError as error:
        return False, f"{url} answered {error.code}"
    except (OSError, ValueError) as error:
        return False, f"{url} unreachable: {error}"
    if status != 200:
        return False, f"{url} answered {status}"
    return True, f"{url} answered 200"


@app.command()
def healthcheck(
    url: Annotated[
        str | None,
        typer.Option(help="URL to probe (default: http://127.0.0.1:$PORT/health/ready)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=60, help="Seconds to wait for the answer.")
    ] = 3.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
) -> None:
    """Probe readiness over HTTP: exit 0 when it answers 200, 1 otherwise."""
    if url is None:
        healthy, reason = probe(default_url(), timeout, PROBE_HOST_HEADER)
    else:
        # An explicit URL names its own host; urllib derives the Host header from it.
        healthy, reason = probe(url, timeout)
    if not quiet:
        typer.echo(reason, err=not healthy)
    raise typer.Exit(0 if healthy else 1)
