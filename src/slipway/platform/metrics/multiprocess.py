"""prometheus_client multiprocess mode: the directory, dead workers, the scrape registry.

With several worker processes each one counts on its own; in multiprocess mode every
process writes its values to files in PROMETHEUS_MULTIPROC_DIR and a scrape sums them
(ERRATA: otherwise each scrape sees one random worker).

prometheus_client decides at import whether it runs in multiprocess mode, from the
environment variable. So the server's parent process must create (and empty) the directory
and export the variable before any worker imports prometheus_client:
`prepare_multiprocess_dir()` does both, and this module imports prometheus_client only inside
functions, so calling it never decides too early.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = structlog.get_logger("slipway.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
READ_ATTEMPTS = 3
READ_RETRY_SECONDS = 0.05
# Files of gauges whose mode only counts live processes: `gauge_livesum_1234.db`.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The directory when multiprocess mode is on (the environment variable is set)."""
    raw = os.environ.get(MULTIPROC_ENV, "").strip()
    return Path(raw) if raw else None


def prepare_multiprocess_dir(path: str | Path | None = None) -> Path | None:
    """Create and empty the multiprocess directory, and export it for the workers.

    Call once in the parent, before workers start: values left by a previous run would be
    added to this run's. `path` defaults to $PROMETHEUS_MULTIPROC_DIR; None when neither is
    set (single-process mode).
    """
    directory = Path(path) if path is not None else multiprocess_dir()
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.glob("*.db"):
        entry.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    if "prometheus_client.values" in sys.modules:
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            # This process already chose single-process mode. Workers that are spawned
            # (uvicorn) start fresh and are fine; workers forked from here would not be.
            log.warning("metrics_multiprocess_prepared_late", directory=str(directory))
    return directory


def mark_process_dead(pid: int, path: str | Path | None = None) -> None:
    """Drop the live gauges (in-flight, pool, memory) of a worker that exited.

    gunicorn's `child_exit` hook calls this; the scrape also reaps dead pids itself, which
    covers servers without such a hook (uvicorn's supervisor, Celery's pool).
    """
    directory = Path(path) if path is not None else multiprocess_dir()
    if directory is None:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def reap_dead_processes(directory: Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; return their pids."""
    dead: set[int] = set()
    for entry in directory.glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            dead.add(pid)
    for pid in dead:
        mark_process_dead(pid, directory)
    return sorted(dead)


def _reaping_collector(directory: Path) -> object:
    from prometheus_client.multiprocess import MultiProcessCollector

    class ReapingMultiProcessCollector(MultiProcessCollector):
        """Sums every process's files after dropping the live gauges of dead ones."""

        def collect(self) -> Iterable[Metric]:
            reap_dead_processes(directory)
            for attempt in range(READ_ATTEMPTS):
                try:
                    return list(super().collect())  # type: ignore[no-untyped-call]
                except (struct.error, RuntimeError):
                    # A worker starting right now has created its file but not yet
                    # sized it (or is growing it): read again in a moment.
                    if attempt + 1 == READ_ATTEMPTS:
                        raise
                    time.sleep(READ_RETRY_SECONDS)
            raise AssertionError("unreachable")

    return ReapingMultiProcessCollector(None, path=str(directory))  # type: ignore[no-untyped-call]


@cache
def exposition_registry() -> CollectorRegistry:
    """What a scrape of this process returns: the sum over every worker in multiprocess
    mode, else the default registry (which adds process_* and python_* metrics)."""
    from prometheus_client import REGISTRY, CollectorRegistry

    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_reaping_collector(directory))  # type: ignore[arg-type]
    return registry
