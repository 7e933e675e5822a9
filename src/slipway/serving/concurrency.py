"""How many CPUs this process may really use, and the web concurrency that follows.

`os.cpu_count()` and `multiprocessing.cpu_count()` report the host's CPUs, also inside a
container limited to one of them (ERRATA). The usable count is the smallest of:

- the CPUs the scheduler lets this process run on (`os.sched_getaffinity`: cpusets,
  `taskset`, Kubernetes' static CPU manager);
- the CFS quota of its cgroup (`docker run --cpus`, a Kubernetes CPU limit):
  cgroup v2 `cpu.max` ("200000 100000" = 2 CPUs, "max 100000" = no limit) or cgroup v1
  `cpu.cfs_quota_us` / `cpu.cfs_period_us` (quota -1 = no limit).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
WEB_CONCURRENCY_ENV = "WEB_CONCURRENCY"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the CFS quota (fractional, e.g. 1.5), or None when unlimited."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    for v1_dir in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
        quota_text = _read(v1_dir / "cpu.cfs_quota_us")
        period_text = _read(v1_dir / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        quota_us, period_us = int(quota_text), int(period_text)
        if quota_us <= 0 or period_us <= 0:
            return None
        return quota_us / period_us
    return None


def affinity_cpus() -> int:
    """CPUs the scheduler may run this process on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # macOS and Windows have no affinity API


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs this process can use: min(affinity, cgroup quota), at least 1.

    A fractional quota is rounded down, as Go's automaxprocs does: 1.5 CPUs of quota run
    one busy event loop without CFS throttling; two would be throttled every period.
    """
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def web_concurrency(
    environ: Mapping[str, str] | None = None, *, cgroup_root: Path = CGROUP_ROOT
) -> int:
    """Worker processes for gunicorn: WEB_CONCURRENCY when set, else one per usable CPU.

    The async formula is workers ≈ cores, not the sync-WSGI `2 * cores + 1` (ERRATA): each
    uvicorn worker is one event loop that keeps a whole core busy by itself, so extra
    processes only add context switches, memory and database connections
    (DB_POOL_SIZE + DB_MAX_OVERFLOW per worker). Blocking work goes to threads, not to more
    processes. Heroku and most PaaS set WEB_CONCURRENCY for their dyno sizes.
    """
    env = os.environ if environ is None else environ
    raw = env.get(WEB_CONCURRENCY_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{WEB_CONCURRENCY_ENV} must be a whole number, got {raw!r}") from None
        if value < 1:
            raise ValueError(f"{WEB_CONCURRENCY_ENV} must be at least 1, got {value}")
        return value
    return available_cpus(cgroup_root)
