"""The Celery worker's own metrics, on WORKER_METRICS_PORT (9808, the `slipway-worker`
scrape job in deploy/monitoring/prometheus.yml).

Celery runs tasks in forked pool processes, so the worker needs multiprocess mode too:
with PROMETHEUS_MULTIPROC_DIR in its environment, the main process empties the directory
before the pool forks and serves the sum over its pool processes; a pool process that
exits drops its live gauges (and the scrape reaps those killed without notice).

    install_worker_metrics(celery_app, settings)   # before the worker starts
"""

from __future__ import annotations

import os
from typing import Any

import structlog

from slipway.platform.metrics import hooks
from slipway.platform.metrics.multiprocess import mark_process_dead, prepare_multiprocess_dir
from slipway.platform.metrics.runtime import refresh_process_gauges
from slipway.platform.metrics.server import MetricsServer
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.metrics")


def install_worker_metrics(celery_app: Any, settings: Settings) -> None:
    """Connect the metrics hooks to a Celery app's worker signals."""
    if not settings.metrics_enabled:
        return
    from celery import signals

    servers: list[MetricsServer] = []

    def start_server(**_: Any) -> None:
        # worker_init runs in the main process before the pool forks. Files left by a
        # previous run are removed here; the main process writes nothing after this, and
        # each pool process opens files of its own after the fork.
        if prepare_multiprocess_dir() is None:
            log.warning(
                "worker_metrics_single_process",
                hint="set PROMETHEUS_MULTIPROC_DIR: pool processes' metrics are not summed",
            )
        host = settings.worker_metrics_host or settings.host
        servers.append(MetricsServer(host, settings.worker_metrics_port).start())

    def stop_server(**_: Any) -> None:
        while servers:
            servers.pop().stop()

    def child_started(**_: Any) -> None:
        hooks.record_worker_start()
        hooks.set_build_info(settings.app_version, settings.git_sha)
        refresh_process_gauges()

    def task_finished(**_: Any) -> None:
        # Pool processes have no event loop of their own to sample memory in.
        refresh_process_gauges()

    def child_exiting(**_: Any) -> None:
        mark_process_dead(os.getpid())

    signals.worker_init.connect(start_server, weak=False)
    signals.worker_shutdown.connect(stop_server, weak=False)
    signals.worker_process_init.connect(child_started, weak=False)
    signals.task_postrun.connect(task_finished, weak=False)
    signals.worker_process_shutdown.connect(child_exiting, weak=False)
