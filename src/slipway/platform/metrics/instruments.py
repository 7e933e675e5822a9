"""Every metric Slipway exports (the contract in docs/operations/monitoring.md).

Importing this module imports prometheus_client, which fixes single- or multiprocess mode
for the process: the server prepares PROMETHEUS_MULTIPROC_DIR before that happens.

Gauges say how workers combine in multiprocess mode: `livesum` adds the live processes
(one series), `liveall` keeps one series per live process (a `pid` label), `livemax` takes
the largest. The `live*` modes forget a worker once it is marked dead.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# prometheus_client needs the directory to exist before the first metric is created.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
if _MULTIPROC_DIR:
    Path(_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# `*_created` series double the series count for a timestamp Prometheus does not use
# (multiprocess mode never exports them, so this also keeps both modes alike).
disable_created_metrics()  # type: ignore[no-untyped-call]

#: 5 ms to 10 s. 0.5 s must stay a boundary: the latency SLO (p99 <= 500 ms) is computed
#: from the `le="0.5"` bucket (deploy/monitoring/rules/slipway.rules.yml).
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
POOL_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# --- HTTP (the RED metrics), labelled by route template, never the raw path --------------
HTTP_REQUESTS = Counter("http_requests_total", "Requests answered.", ["method", "route", "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to its last response byte.",
    ["method", "route"],
    buckets=HTTP_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "http_requests_in_flight", "Requests being handled.", multiprocess_mode="livesum"
)


class InFlight:
    """Requests being handled by this process, as a plain int.

    Two gauge updates per request were a third of the middleware's cost. The gauge reads
    this count instead: at scrape time in single-process mode; in multiprocess mode each
    worker writes it every second (runtime.py) and the scraped worker just before the
    scrape (`publish_in_flight`).
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


IN_FLIGHT = InFlight()


def publish_in_flight() -> None:
    """Write this process's in-flight count to its file (multiprocess mode)."""
    if _MULTIPROCESS:
        HTTP_IN_FLIGHT.set(IN_FLIGHT.value)


_MULTIPROCESS = bool(_MULTIPROC_DIR)
if not _MULTIPROCESS:
    HTTP_IN_FLIGHT.set_function(lambda: IN_FLIGHT.value)

# --- Database pool (one series per worker process: each has its own pool) ---------------
DB_POOL_SIZE = Gauge("db_pool_size", "Configured pool size.", multiprocess_mode="liveall")
DB_POOL_CHECKED_OUT = Gauge(
    "db_pool_checked_out", "Connections in use.", multiprocess_mode="liveall"
)
DB_POOL_OVERFLOW = Gauge(
    "db_pool_overflow",
    "Overflow connections (negative while the pool is below its size).",
    multiprocess_mode="liveall",
)
DB_POOL_WAIT = Histogram(
    "db_pool_wait_seconds",
    "Time to get a connection from the pool (including opening a new one).",
    buckets=POOL_WAIT_BUCKETS,
)

# --- Cache and rate limits ----------------------------------------------------------------
CACHE_HITS = Counter("cache_hits_total", "Cache lookups that found a value.", ["namespace"])
CACHE_MISSES = Counter("cache_misses_total", "Cache lookups that did not.", ["namespace"])
CACHE_ERRORS = Counter("cache_errors_total", "Redis errors the cache absorbed.")
RATE_LIMIT_REJECTIONS = Counter(
    "rate_limit_rejections_total", "Requests refused with 429.", ["policy"]
)

# --- Background jobs ----------------------------------------------------------------------
JOBS_ENQUEUED = Counter("jobs_enqueued_total", "Jobs queued.", ["kind"])
JOBS_STARTED = Counter("jobs_started_total", "Job runs started.", ["kind"])
JOBS_SUCCEEDED = Counter("jobs_succeeded_total", "Jobs that succeeded.", ["kind"])
JOBS_FAILED = Counter("jobs_failed_total", "Jobs that failed after their retries.", ["kind"])
JOBS_RETRIED = Counter("jobs_retried_total", "Failed runs that will be retried.", ["kind"])
JOB_RUN_DURATION = Histogram(
    "job_run_duration_seconds", "Run time of one attempt.", ["kind"], buckets=JOB_BUCKETS
)
JOB_QUEUE_WAIT = Histogram(
    "job_queue_wait_seconds", "Time from enqueue to start.", ["kind"], buckets=JOB_BUCKETS
)

# --- Realtime, readiness, build, workers --------------------------------------------------
WEBSOCKET_CONNECTIONS = Gauge(
    "websocket_connections", "Open WebSocket connections.", multiprocess_mode="livesum"
)
BUILD_INFO = Gauge(
    "slipway_build_info",
    "What is deployed (always 1).",
    ["version", "git_sha"],
    multiprocess_mode="livemax",
)
WORKER_STARTS = Counter("worker_starts_total", "Worker processes started.")

# --- Per-process resources in multiprocess mode -------------------------------------------
# In single-process mode the default registry's ProcessCollector exports these names, so
# these are registered nowhere (registry=None) and only their multiprocess files are read.
PROCESS_RESIDENT_MEMORY = Gauge(
    "process_resident_memory_bytes",
    "Resident memory of the worker process.",
    multiprocess_mode="liveall",
    registry=None,
)
PROCESS_START_TIME = Gauge(
    "process_start_time_seconds",
    "Start time of the worker process (Unix time).",
    multiprocess_mode="liveall",
    registry=None,
)


@cache
def health_ready() -> Gauge:
    """Created on first use: an unlabelled gauge gets a 0 series in every process that
    creates it, and a Celery process must not look like a failing readiness check."""
    return Gauge(
        "health_ready",
        "Result of the last readiness check (1 ok, 0 failing).",
        multiprocess_mode="liveall",
    )
