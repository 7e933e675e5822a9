"""`slipway serve --server granian`: Granian (a Rust HTTP server) with its ASGI interface.

Its speed against the other servers is measured by benchmarks/scenarios_servers.py.
Configured the way the other servers are:
- proxy headers are left alone: the app resolves X-Forwarded-* itself against
  FORWARDED_ALLOW_IPS (Granian rewrites nothing unless wrapped in its proxy-headers
  helper, which is not used here);
- SIGTERM stops the workers gracefully (in-flight requests finish, then the lifespan
  shutdown runs); a worker still busy GRACEFUL_TIMEOUT seconds later is killed, so a stop
  never outlasts the orchestrator's grace period. SIGHUP respawns the workers one by one;
- a worker that dies is respawned (Granian's default is to exit);
- no access log (the app writes one structured line per request); Granian's own messages
  go through the application's log handler.

The master stays in this process (the PID the container started receives the signals);
the workers are forked by it and each builds the app itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipway.platform.settings import Settings

#: The app factory; Granian calls it in each worker (`factory=True`).
APP_FACTORY = "slipway.app:create_app"

#: Granian's loggers hand their records to the root handler the app installs, instead of
#: Granian's own plain-text handlers (the keys replace Granian's defaults).
LOG_DICTCONFIG: dict[str, Any] = {
    "loggers": {
        "_granian": {"handlers": [], "propagate": True},
        "granian.access": {"handlers": [], "propagate": True},
    },
}


def server_options(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> dict[str, Any]:
    """The keyword arguments of granian's Server, from the settings and the command line."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    if (certfile is None) != (keyfile is None):
        raise ValueError("--certfile and --keyfile go together")
    return {
        "target": APP_FACTORY,
        "factory": True,
        "address": host,
        "port": port,
        # ASGI with the lifespan protocol: startup failures fail the boot, and the
        # shutdown closes the pools.
        "interface": Interfaces.ASGI,
        "workers": workers,
        "loop": Loops.uvloop,
        # HTTP/1.1, plus HTTP/2 by ALPN over TLS or by prior knowledge (h2c) without it.
        "http": HTTPModes.auto,
        "websockets": True,
        "log_access": False,
        "log_level": LogLevels(settings.log_level.lower()),
        "log_dictconfig": LOG_DICTCONFIG,
        "workers_kill_timeout": settings.graceful_timeout,
        "respawn_failed_workers": True,
        "ssl_cert": certfile,
        "ssl_key": keyfile,
    }


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT."""
    from granian.server import Server

    options = server_options(
        settings, host=host, port=port, workers=workers, certfile=certfile, keyfile=keyfile
    )
    Server(**options).serve()
