"""Prometheus metrics: the catalogue, the request middleware, /metrics and its exposure.

- `hooks`: what other modules call (`record_cache`, `record_rate_limited`, `record_job`,
  `ws_connected`/`ws_disconnected`, ...); the only API they need.
- `middleware.MetricsMiddleware`: RED metrics per route template.
- `endpoint`: the /metrics route, guarded by METRICS_EXPOSURE, and the separate listener.
- `runtime`: what the app factory and the lifespan install (pool, process gauges,
  readiness, build info).
- `celery`: the Celery worker's own listener (port 9808).

This package's top level never imports prometheus_client: the server's parent calls
`prepare_multiprocess_dir()` from here before any worker decides its mode.
"""

from __future__ import annotations

from slipway.platform.metrics.multiprocess import (
    MULTIPROC_ENV,
    mark_process_dead,
    multiprocess_dir,
    prepare_multiprocess_dir,
)

__all__ = ["MULTIPROC_ENV", "mark_process_dead", "multiprocess_dir", "prepare_multiprocess_dir"]
