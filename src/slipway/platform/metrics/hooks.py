"""The functions other modules call to record what happened. Small on purpose, and stable:
call sites never touch prometheus_client, so metric names and labels can change here alone.

    from slipway.platform.metrics import hooks as metrics
    metrics.record_cache(hit=True, namespace="product")
    metrics.record_rate_limited("login")
    metrics.record_job("succeeded", kind="send_email", duration=0.42)
    metrics.ws_connected(); metrics.ws_disconnected()

Every label value passed here must come from a small fixed set (a cache namespace, a policy
name, a job kind), never from request data; past MAX_LABEL_VALUES distinct values per
metric the rest are counted as "other", so a bug cannot explode the series count.
"""

from __future__ import annotations

import threading
from typing import Generic, Literal, TypeVar

from prometheus_client import Counter, Histogram

from slipway.platform.metrics import instruments as m

MAX_LABEL_VALUES = 100
OVERFLOW_LABEL = "other"

JobEvent = Literal["enqueued", "started", "succeeded", "failed", "retried"]
JOB_EVENTS: tuple[JobEvent, ...] = ("enqueued", "started", "succeeded", "failed", "retried")

C = TypeVar("C", Counter, Histogram)


class _Children(Generic[C]):
    """`metric.labels(value)` memoised (labels() takes a lock and builds a tuple every call)
    and bounded to MAX_LABEL_VALUES distinct values."""

    __slots__ = ("_children", "_lock", "_metric")

    _metric: C
    _children: dict[str, C]

    def __init__(self, metric: C) -> None:
        self._metric = metric
        self._children = {}
        self._lock = threading.Lock()

    def get(self, value: str) -> C:
        child = self._children.get(value)
        if child is not None:
            return child
        with self._lock:
            if value not in self._children and len(self._children) >= MAX_LABEL_VALUES:
                value = OVERFLOW_LABEL
            child = self._children.get(value)
            if child is None:
                child = self._metric.labels(value)
                self._children[value] = child
            return child


_cache_hits = _Children(m.CACHE_HITS)
_cache_misses = _Children(m.CACHE_MISSES)
_rate_limited = _Children(m.RATE_LIMIT_REJECTIONS)
_job_counters: dict[JobEvent, _Children[Counter]] = {
    "enqueued": _Children(m.JOBS_ENQUEUED),
    "started": _Children(m.JOBS_STARTED),
    "succeeded": _Children(m.JOBS_SUCCEEDED),
    "failed": _Children(m.JOBS_FAILED),
    "retried": _Children(m.JOBS_RETRIED),
}
_job_run = _Children(m.JOB_RUN_DURATION)
_job_wait = _Children(m.JOB_QUEUE_WAIT)


def record_cache(hit: bool, namespace: str) -> None:
    """One cache lookup in `namespace` (the key's first part: "product", "dashboard")."""
    (_cache_hits if hit else _cache_misses).get(namespace).inc()


def record_cache_error() -> None:
    """The cache absorbed a backend (Redis) error."""
    m.CACHE_ERRORS.inc()


def record_rate_limited(policy: str) -> None:
    """A request was refused with 429 under `policy` ("default" for the global limit)."""
    _rate_limited.get(policy).inc()


def record_job(event: JobEvent, kind: str, duration: float | None = None) -> None:
    """A job life-cycle event. `duration` (seconds): for "started" the time it waited in the
    queue; for "succeeded", "failed" and "retried" the run time of that attempt."""
    _job_counters[event].get(kind).inc()
    if duration is None or duration < 0:
        return
    if event == "started":
        _job_wait.get(kind).observe(duration)
    elif event != "enqueued":
        _job_run.get(kind).observe(duration)


def ws_connected() -> None:
    """A WebSocket connection was accepted."""
    m.WEBSOCKET_CONNECTIONS.inc()


def ws_disconnected() -> None:
    """An accepted WebSocket connection closed (call exactly once per ws_connected)."""
    m.WEBSOCKET_CONNECTIONS.dec()


def record_ready(ok: bool) -> None:
    """The result of a readiness check."""
    m.health_ready().set(1 if ok else 0)


def record_worker_start() -> None:
    """A worker process (HTTP or Celery) started; unplanned restarts show up as a rate."""
    m.WORKER_STARTS.inc()


def set_build_info(version: str, git_sha: str | None) -> None:
    m.BUILD_INFO.labels(version=version, git_sha=git_sha or "unknown").set(1)
