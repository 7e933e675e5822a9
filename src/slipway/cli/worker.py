"""`slipway worker` and `slipway beat`: the Celery processes for background jobs."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from slipway.cli.common import app, load_settings
from slipway.platform.settings import Settings


class Pool(StrEnum):
    prefork = "prefork"
    solo = "solo"
    threads = "threads"


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota
    (`os.cpu_count()` reports the host's CPUs inside a container)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def _require_broker(settings: Settings, command: str) -> None:
    if settings.jobs_engine != "celery":
        typer.echo(
            f"slipway {command}: no broker configured; set CELERY_BROKER_URL or REDIS_URL "
            "(without one, jobs run inside the web process)",
            err=True,
        )
        raise typer.Exit(2)


def _quiet(settings: Settings) -> list[str]:
    # Celery's banner is plain text; under LOG_FORMAT=json every line must be JSON.
    return ["--quiet"] if settings.effective_log_format == "json" else []


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Child processes (default: JOBS_WORKER_CONCURRENCY or CPUs)."),
    ] = None,
    pool: Annotated[Pool, typer.Option(help="Celery execution pool.")] = Pool.prefork,
) -> None:
    """Run a Celery worker for background jobs."""
    from slipway.platform.jobs.celery_app import create_celery_app, install_worker_hooks
    from slipway.platform.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    _require_broker(settings, "worker")
    celery = create_celery_app(settings)
    install_worker_hooks(celery)
    children = concurrency or settings.jobs_worker_concurrency or available_cpus()
    celery.worker_main(
        [
            *_quiet(settings),
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={children}",
            f"--pool={pool.value}",
            f"--queues={settings.jobs_queue}",
            # No cluster chatter: state is in the database, not in worker gossip.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


@app.command()
def beat() -> None:
    """Run Celery beat: the periodic purge of expired rows (run exactly one)."""
    from slipway.platform.jobs.celery_app import create_celery_app, install_worker_hooks
    from slipway.platform.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    _require_broker(settings, "beat")
    celery = create_celery_app(settings)
    install_worker_hooks(celery)
    celery.start([*_quiet(settings), "beat", f"--loglevel={settings.log_level}"])
