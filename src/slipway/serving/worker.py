"""The gunicorn worker: uvicorn-worker's UvicornWorker configured the way `slipway serve
--server uvicorn` configures uvicorn (ERRATA: `uvicorn.workers.UvicornWorker` is deprecated)."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker as _UvicornWorker

from slipway.serving.protocol import HTTP_PROTOCOL

#: Seconds kept back from gunicorn's graceful_timeout: after uvicorn stops waiting for
#: in-flight requests the worker still runs the lifespan shutdown (pools, Redis) before
#: the master's SIGKILL deadline.
SHUTDOWN_MARGIN_SECONDS = 2


class UvicornWorker(_UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        # httptools, draining idle keep-alive connections at shutdown (no resets on SIGHUP).
        "http": HTTP_PROTOCOL,
        # The app resolves X-Forwarded-* itself (FORWARDED_ALLOW_IPS) for every server;
        # uvicorn doing it too would apply the rules twice.
        "proxy_headers": False,
        "server_header": False,
        "date_header": True,
        # The app writes one structured access line per request (PERF-NOTES: uvicorn's
        # stdlib access log costs about a quarter of throughput).
        "access_log": False,
        # Fail the boot, not the first request, when startup (database, Redis) fails.
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn waits forever for in-flight work unless this is set (ERRATA); it must
        # end before gunicorn's graceful_timeout so shutdown hooks still run.
        self.config.timeout_graceful_shutdown = max(
            1, self.cfg.graceful_timeout - SHUTDOWN_MARGIN_SECONDS
        )
