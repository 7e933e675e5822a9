"""Gunicorn configuration for Slipway (the documents' production recommendation for VMs and
Compose). Used by `slipway serve --server gunicorn`, and by gunicorn directly:

    gunicorn -c python:slipway.serving.gunicorn_conf 'slipway.app:create_app()'

(the repository's top-level `gunicorn.conf.py` imports this module, so a bare `gunicorn
'slipway.app:create_app()'` run from the checkout picks it up too).

Every value comes from the application's Settings (HOST, PORT, GRACEFUL_TIMEOUT,
KEEPALIVE_TIMEOUT, LOG_LEVEL, LOG_FORMAT) or from WEB_CONCURRENCY, so the same environment
drives both servers. Gunicorn reads the module-level names below; private helpers start
with an underscore so they can never collide with a gunicorn setting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from slipway.cli.common import load_settings
from slipway.platform.logging import configure_logging
from slipway.platform.metrics import mark_process_dead, prepare_multiprocess_dir
from slipway.serving.concurrency import web_concurrency
from slipway.serving.gunicorn_app import bind_address

__all__ = [
    "accesslog",
    "bind",
    "child_exit",
    "control_socket_disable",
    "errorlog",
    "graceful_timeout",
    "keepalive",
    "logconfig_dict",
    "loglevel",
    "max_requests",
    "max_requests_jitter",
    "on_starting",
    "preload_app",
    "proc_name",
    "timeout",
    "when_ready",
    "worker_abort",
    "worker_class",
    "worker_tmp_dir",
    "workers",
]

_settings = load_settings()
_log = logging.getLogger("gunicorn.error")


# --- sockets and processes ------------------------------------------------------------

bind = [bind_address(_settings.host, _settings.port)]


def _workers() -> int:
    # WEB_CONCURRENCY (what Heroku and most PaaS set), else an explicit WORKERS, else one
    # worker per CPU this container may use (cgroup quota and CPU affinity, not the host's
    # count). Async workers ≈ cores, not 2n+1: see slipway.serving.concurrency.
    if os.environ.get("WEB_CONCURRENCY", "").strip() or "workers" not in _settings.model_fields_set:
        return web_concurrency()
    return _settings.workers


workers = _workers()
worker_class = "slipway.serving.worker.UvicornWorker"
# The heartbeat file each worker touches: on a disk-backed /tmp (or an overlay filesystem)
# that write can block for seconds and get healthy workers killed; /dev/shm is RAM.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108

# preload_app=False (the default, written down because it is a decision): each worker
# imports the code and builds the app itself, after fork.
# - The lifespan opens the database pool, Redis clients and the asyncio objects they are
#   bound to in each worker. Nothing that holds a socket or an event loop may cross a fork:
#   a pool inherited from a preloading master is shared by every child and corrupts.
# - SIGHUP then reloads the code as well (new workers import it again); with preload the
#   master keeps the old code and only the workers restart.
# - The cost is memory: no copy-on-write sharing of imported modules (a worker measured
#   ~125 MB RSS here, part of which preload would share), cheap next to a corrupt pool.
preload_app = False

# --- timeouts -------------------------------------------------------------------------

# For an async worker this is not a request deadline: the event loop notifies the master
# every timeout/2 seconds, so a worker is killed only when its loop is blocked this long.
timeout = _settings.worker_timeout
# SIGTERM/SIGHUP: workers stop accepting, finish in-flight requests (each worker gives up
# two seconds earlier, see slipway.serving.worker) and are SIGKILLed after this.
graceful_timeout = _settings.graceful_timeout
# Above the proxy's upstream idle timeout (Nginx keepalive_timeout 60 s -> 75 s): the
# proxy must always be the side that closes an idle connection, or it sends a request
# down a socket the app is closing and returns a 502.
keepalive = _settings.keepalive_timeout

# Recycle each worker after about this many requests, bounding slow leaks; the jitter
# keeps the workers from restarting at the same moment.
max_requests = 10_000
max_requests_jitter = 1_000

# --- logging --------------------------------------------------------------------------

loglevel = _settings.log_level.lower()
errorlog = "-"
# The app logs one JSON line per request itself (route template, request_id, client IP);
# gunicorn's access log would duplicate it (the uvicorn worker never writes to it anyway).
accesslog = None
# gunicorn 25.1+ opens a control socket under $HOME by default: nothing to write there in
# a read-only container, and two servers on one host would share it.
control_socket_disable = True
proc_name = "slipway"


def _app_log_handler() -> logging.Handler:
    """The root handler the application's logging installs (structlog; JSON in production)."""
    configure_logging(_settings.log_level, _settings.effective_log_format)
    return logging.getLogger().handlers[0]


# Gunicorn's own loggers (master and worker lifecycle) propagate to the application's root
# handler, so every line the process prints has the same format.
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {},
    "handlers": {"app": {"()": _app_log_handler}},
    "root": {"level": _settings.log_level, "handlers": ["app"]},
    "loggers": {
        "gunicorn.error": {"level": _settings.log_level, "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
    },
}

# --- hooks ----------------------------------------------------------------------------


def on_starting(server: Any) -> None:
    """Empty PROMETHEUS_MULTIPROC_DIR once, before any worker writes to it."""
    directory = prepare_multiprocess_dir()
    if directory is not None:
        _log.info("prometheus multiprocess directory ready: %s", directory)


def when_ready(server: Any) -> None:
    _log.info(
        "gunicorn ready: %s workers, graceful_timeout=%ss, keepalive=%ss",
        server.cfg.workers,
        server.cfg.graceful_timeout,
        server.cfg.keepalive,
    )


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone (recycled, reloaded or crashed): drop its live gauges."""
    mark_process_dead(worker.pid)


def worker_abort(worker: Any) -> None:
    """SIGABRT from the master: the worker's event loop was blocked for `timeout` seconds."""
    _log.error("worker %s aborted: event loop blocked for %ss", worker.pid, worker.cfg.timeout)
