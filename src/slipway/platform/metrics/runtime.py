"""What the app factory and the HTTP lifespan install for metrics.

- `install_metrics(app, settings)`: the /metrics route (the factory adds the middleware in
  its place in the stack).
- `open_metrics(services)`: per worker process, at lifespan start: worker start, build info,
  pool instrumentation, a background refresh of the gauges nobody else updates (memory,
  pool resync, readiness) and, for METRICS_EXPOSURE=port, the separate listener. Everything
  stops with the lifespan (services.exit_stack).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from fastapi import FastAPI

from slipway.platform.metrics import hooks
from slipway.platform.metrics import instruments as m
from slipway.platform.metrics.endpoint import install_metrics_route
from slipway.platform.metrics.multiprocess import multiprocess_dir
from slipway.platform.metrics.pool import instrument_pool, refresh_pool_gauges
from slipway.platform.metrics.server import MetricsServer
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.metrics")

#: How often the in-flight count is written (multiprocess mode), and how many of those
#: ticks pass between refreshes of the sampled gauges (memory, pool, readiness): 10 s,
#: below Prometheus's 15 s scrape interval.
TICK_SECONDS = 1.0
REFRESH_EVERY_TICKS = 10


def install_metrics(app: FastAPI, settings: Settings) -> None:
    if settings.metrics_enabled:
        install_metrics_route(app, settings)


def refresh_process_gauges() -> None:
    """Memory and start time of this process, in multiprocess mode (one series per pid).

    In single-process mode the default registry's ProcessCollector already exports them.
    """
    if multiprocess_dir() is None:
        return
    from prometheus_client import ProcessCollector

    targets = {
        "process_resident_memory_bytes": m.PROCESS_RESIDENT_MEMORY,
        "process_start_time_seconds": m.PROCESS_START_TIME,
    }
    for family in ProcessCollector(registry=None).collect():
        gauge = targets.get(family.name)
        if gauge is not None and family.samples:
            gauge.set(family.samples[0].value)


async def _refresh(services: Services) -> None:
    from slipway.platform.health import run_checks

    refresh_process_gauges()
    refresh_pool_gauges(services.engine)
    result = await run_checks(services)
    hooks.record_ready(result.status != "failing")


async def _refresh_forever(services: Services) -> None:
    tick = 0
    while True:
        m.publish_in_flight()
        if tick % REFRESH_EVERY_TICKS == 0:
            try:
                await _refresh(services)
            except Exception:  # a failed refresh must not end the loop (or the worker)
                log.exception("metrics_refresh_failed")
        tick += 1
        await asyncio.sleep(TICK_SECONDS)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def open_metrics(services: Services) -> None:
    """Per-process metrics for an HTTP worker; stopped when the lifespan ends."""
    settings = services.settings
    if not settings.metrics_enabled:
        return
    hooks.record_worker_start()
    hooks.set_build_info(settings.app_version, settings.git_sha)
    instrument_pool(services.engine)
    task = asyncio.create_task(_refresh_forever(services), name="metrics-refresh")
    services.exit_stack.push_async_callback(_cancel, task)
    if settings.metrics_exposure_mode == "port":
        server = MetricsServer(settings.metrics_host or settings.host, settings.metrics_port)
        server.start()
        services.exit_stack.callback(server.stop)
