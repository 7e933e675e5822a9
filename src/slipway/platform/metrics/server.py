"""A metrics listener on a port of its own (METRICS_EXPOSURE=port, and the Celery worker).

prometheus_client's WSGI app (content negotiation, gzip, `name[]` filters) on a threaded
stdlib server in a daemon thread: scrapes never touch the event loop or the app's stack.

Several HTTP workers each start one with SO_REUSEPORT on the same port: the kernel hands
each scrape to one of them, and since each answers with the sum over all workers (the
multiprocess files), it does not matter which. Without multiprocess mode only one worker
could give a complete answer, so use one worker or token/allowlist exposure then.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import structlog
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from slipway.platform.metrics.multiprocess import exposition_registry

log = structlog.get_logger("slipway.metrics")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s would flood the log (they are quiet on the app's port too).
        return


class _ReusePortServer(ThreadingWSGIServer):
    allow_reuse_address = True
    allow_reuse_port = True
    daemon_threads = True


class _ReusePortServer6(_ReusePortServer):
    address_family = socket.AF_INET6


class MetricsServer:
    """Serves GET /metrics on host:port until `stop()`."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: ThreadingWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def bound_port(self) -> int:
        assert self._server is not None
        port: int = self._server.server_address[1]
        return port

    def start(self) -> MetricsServer:
        server_class: type[ThreadingWSGIServer] = _ReusePortServer
        try:
            if ipaddress.ip_address(self.host).version == 6:
                server_class = _ReusePortServer6
        except ValueError:  # a host name: IPv4 resolution
            pass
        self._server = make_server(
            self.host,
            self.port,
            make_wsgi_app(exposition_registry()),
            server_class,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-server", daemon=True
        )
        self._thread.start()
        log.info("metrics_server_started", host=self.host, port=self.bound_port)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
