"""`slipway serve --server hypercorn`: the documents' HTTP/2 server (000 §2.3).

Over TLS (--certfile/--keyfile) Hypercorn negotiates `h2` or `http/1.1` by ALPN; without
TLS it speaks HTTP/1.1 and cleartext HTTP/2 (h2c) to a proxy that asks for it.

Configured the way the other servers are:
- proxy headers are left alone: the app resolves X-Forwarded-* itself against
  FORWARDED_ALLOW_IPS, for every server (Hypercorn rewrites nothing unless wrapped in its
  ProxyFixMiddleware, which is not used here);
- KEEPALIVE_TIMEOUT stays above the proxy's upstream idle timeout;
- no server header, no access log (the app writes one structured line per request), and
  Hypercorn's own messages go through the application's log handler.

The workers (one or more) run under the small supervisor below instead of
`hypercorn.run.run`, whose shutdown is not graceful with several workers: it terminates
every remaining worker the moment the first one has exited, cutting their in-flight
requests, and on Python 3.12.1+ a worker can wait on an open connection past its
graceful_timeout (https://github.com/pgjones/hypercorn/pull/374). Here, as with gunicorn:
SIGTERM/SIGINT ask every worker to stop (no new connections, in-flight requests get
GRACEFUL_TIMEOUT minus a margin, then the lifespan shutdown runs), and a worker still alive
GRACEFUL_TIMEOUT seconds after the signal is killed, so a stop never outlasts the
orchestrator's grace period. A worker that dies stops the whole server with exit code 1
(Hypercorn's own policy): the orchestrator restarts the container.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from multiprocessing import get_context
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType
from typing import Any

from hypercorn.config import Config, Sockets

from slipway.platform.settings import Settings

#: The application as Hypercorn loads it: the string is evaluated in the module, so the
#: factory is called once in each worker process, never in the supervisor.
APPLICATION_PATH = "slipway.app:create_app()"
#: ALPN protocols offered over TLS, most preferred first.
ALPN_PROTOCOLS = ["h2", "http/1.1"]
#: Seconds kept back from GRACEFUL_TIMEOUT for the lifespan shutdown (pools, Redis) after a
#: worker stops waiting for in-flight requests (as slipway.serving.worker does for gunicorn).
SHUTDOWN_MARGIN_SECONDS = 2
#: How often the supervisor looks at its workers, and a worker at its parent.
POLL_SECONDS = 0.2

_log = logging.getLogger("hypercorn.error")


def bind_address(host: str, port: int) -> str:
    """Hypercorn's bind notation (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def build_config(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> Config:
    """A Hypercorn Config from the application's settings and the command line."""
    if (certfile is None) != (keyfile is None):
        raise ValueError("--certfile and --keyfile go together")
    config = Config()
    config.application_path = APPLICATION_PATH
    config.bind = [bind_address(host, port)]
    config.workers = workers
    config.worker_class = "uvloop"
    config.graceful_timeout = float(max(1, settings.graceful_timeout - SHUTDOWN_MARGIN_SECONDS))
    config.keep_alive_timeout = float(settings.keepalive_timeout)
    config.include_server_header = False
    config.include_date_header = True
    config.accesslog = None
    # A Logger (not "-") makes Hypercorn log through it unchanged: its records propagate
    # to the root handler the app installs (JSON lines in production).
    config.errorlog = _log
    config.loglevel = settings.log_level
    if certfile is not None and keyfile is not None:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
        config.alpn_protocols = list(ALPN_PROTOCOLS)
    return config


def _worker_main(config: Config, sockets: Sockets, stop: Event, parent_pid: int) -> None:
    """One worker process: Hypercorn's uvloop worker, stopped through the shared event."""
    from hypercorn.asyncio.run import uvloop_worker

    requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # SIGTERM sent to the whole process group (systemd's default KillMode): stop
        # gracefully, like the supervisor would. Only a thread-safe flag is set here; the
        # shared event's lock may be held by this very thread when the signal lands.
        requested.set()

    def watch() -> None:
        # A worker whose supervisor is gone (SIGKILLed) stops instead of serving forever.
        while not requested.wait(POLL_SECONDS) and os.getppid() == parent_pid:
            pass
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=watch, name="hypercorn-stop-watch", daemon=True).start()
    uvloop_worker(config, sockets, stop)


def _start_worker(config: Config, sockets: Sockets, stop: Event) -> BaseProcess:
    # spawn, not fork: nothing of this process (its imports, its logging) is inherited;
    # each worker imports the app and opens its own pools.
    process = get_context("spawn").Process(
        target=_worker_main,
        kwargs={"config": config, "sockets": sockets, "stop": stop, "parent_pid": os.getpid()},
        name="slipway-hypercorn-worker",
    )
    process.start()
    return process


def supervise(config: Config, deadline_seconds: float) -> int:
    """Run `config.workers` workers until a signal or a worker's exit; the exit code."""
    sockets = config.create_sockets()
    stop = get_context("spawn").Event()
    signalled: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signalled.append(signum)

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        _log.warning("SIGHUP ignored: restart the service to load new code")

    previous: dict[int, Any] = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    exit_code = 0
    processes: list[BaseProcess] = []
    try:
        processes = [_start_worker(config, sockets, stop) for _ in range(config.workers)]
        while not signalled:
            wait([process.sentinel for process in processes], timeout=POLL_SECONDS)
            dead = [process for process in processes if process.exitcode is not None]
            if dead:
                _log.error("worker %s exited with %s: stopping", dead[0].pid, dead[0].exitcode)
                exit_code = 1
                break
        stop.set()
        deadline = time.monotonic() + deadline_seconds
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                _log.warning(
                    "worker %s still busy after %ss: killed", process.pid, deadline_seconds
                )
                process.kill()
                process.join()
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
        for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
            sock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return exit_code


def run(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; exits non-zero when a worker process failed."""
    config = build_config(
        settings, host=host, port=port, workers=workers, certfile=certfile, keyfile=keyfile
    )
    exit_code = supervise(config, deadline_seconds=float(settings.graceful_timeout))
    if exit_code:
        raise SystemExit(exit_code)
