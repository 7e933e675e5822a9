"""The Celery application: configuration, one task per job kind, the purge task for beat,
and the per-process asyncio runtime the (synchronous) tasks run their handlers in.

A message carries only the job id; the payload and the state live in the `jobs` table.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded

from slipway.platform.jobs.execute import JobOutcome, execute_job, record_failure
from slipway.platform.jobs.purge import run_purges
from slipway.platform.jobs.registry import JobSpec, load_job_modules, registry
from slipway.platform.observability.celery import install_worker_observability
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.jobs.celery")

T = TypeVar("T")
PURGE_TASK = "slipway.purge_expired"


def task_name(kind: str) -> str:
    return f"slipway.job.{kind}"


class JobRetryError(Exception):
    """Raised to Celery when an attempt failed and another one is due (autoretry_for)."""


class WorkerRuntime:
    """One event loop and one set of services per worker process.

    Created lazily on the first task, so nothing is opened before the prefork pool forks,
    and closed when the process exits (`install_worker_hooks`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runner: asyncio.Runner | None = None
        self._stack: AsyncExitStack | None = None
        self._services: Services | None = None

    def run(self, work: Callable[[Services], Coroutine[Any, Any, T]]) -> T:
        if self._runner is None or self._services is None:
            self._open()
        assert self._runner is not None
        assert self._services is not None
        return self._runner.run(work(self._services))

    def _open(self) -> None:
        from slipway.platform.services import open_services

        runner = asyncio.Runner()
        stack = AsyncExitStack()
        self._services = runner.run(stack.enter_async_context(open_services(self.settings)))
        self._runner, self._stack = runner, stack

    def close(self) -> None:
        runner, stack = self._runner, self._stack
        self._runner = self._stack = self._services = None
        if runner is None:
            return
        try:
            if stack is not None:
                runner.run(stack.aclose())
        except Exception:
            log.exception("worker_runtime_close_failed")
        finally:
            runner.close()


def celery_config(settings: Settings) -> dict[str, Any]:
    # Celery's soft limit fires only when a handler blocks the event loop past our own
    # asyncio soft limit: halfway between that and the hard limit (which kills the child).
    soft = settings.jobs_soft_time_limit
    celery_soft = soft + (settings.jobs_time_limit - soft) / 2
    schedule_file = settings.celery_beat_schedule_file or (
        Path(tempfile.gettempdir()) / "slipway-celerybeat-schedule"
    )
    return {
        "broker_url": settings.jobs_broker_url,
        "broker_connection_retry_on_startup": True,
        # Redis has no real acks: an unacked message is restored to the queue once this
        # many seconds pass, which is what redelivers the task of a killed worker.
        "broker_transport_options": {"visibility_timeout": settings.jobs_visibility_timeout},
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        # State lives in the jobs table; no result backend.
        "task_ignore_result": True,
        "task_default_queue": settings.jobs_queue,
        # Acknowledge after the run, and requeue when the child dies mid-task: with the
        # idempotent `execute_job`, at-least-once delivery gives exactly-once effects.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # One message at a time per child: a long task never holds others hostage.
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": settings.jobs_max_tasks_per_child,
        "task_soft_time_limit": celery_soft,
        "task_time_limit": settings.jobs_time_limit,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": False,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            "purge-expired": {
                "task": PURGE_TASK,
                "schedule": timedelta(seconds=settings.jobs_purge_interval_seconds),
                "options": {"queue": settings.jobs_queue},
            }
        },
        "beat_schedule_filename": str(schedule_file),
    }


def create_celery_app(settings: Settings, *, set_as_current: bool = True) -> Celery:
    """The Celery app for `settings`, with a task for every registered job kind."""
    load_job_modules(settings)
    app = Celery("slipway", set_as_current=set_as_current)
    app.conf.update(celery_config(settings))
    runtime = WorkerRuntime(settings)
    app.slipway_runtime = runtime
    for spec in registry.specs():
        _register_job_task(app, spec, runtime)
    _register_purge_task(app, runtime)
    return app


def _register_job_task(app: Celery, spec: JobSpec, runtime: WorkerRuntime) -> None:
    settings = runtime.settings

    def run_job(task: Any, job_id: str) -> str:
        identifier = uuid.UUID(job_id)
        retries_done = int(task.request.retries)
        try:
            outcome = runtime.run(
                lambda services: execute_job(services, identifier, retries_done=retries_done)
            )
        except SoftTimeLimitExceeded:
            # The handler blocked the loop past every soft limit: that loop is unusable.
            runtime.close()
            final = retries_done >= spec.retries(settings)
            runtime.run(
                lambda services: record_failure(
                    services, identifier, "the job exceeded Celery's soft time limit", final=final
                )
            )
            outcome = JobOutcome.FAILED if final else JobOutcome.RETRY
        if outcome is JobOutcome.RETRY:
            raise JobRetryError(job_id)
        return outcome.value

    # shared=False: the task belongs to this app only, not to every Celery app created
    # later in the process (tests build many).
    app.task(
        name=task_name(spec.kind),
        bind=True,
        shared=False,
        autoretry_for=(JobRetryError,),
        max_retries=spec.retries(settings),
        retry_backoff=settings.jobs_retry_backoff,
        retry_backoff_max=settings.jobs_retry_backoff_max,
        retry_jitter=True,
    )(run_job)


def _register_purge_task(app: Celery, runtime: WorkerRuntime) -> None:
    def purge_expired(_task: Any) -> dict[str, int]:
        return runtime.run(run_purges)

    app.task(name=PURGE_TASK, bind=True, shared=False)(purge_expired)


def install_worker_hooks(app: Celery) -> None:
    """Process-level hooks for `slipway worker`: our logging, and closing each child's
    services (database pool, Redis) when the child exits."""
    runtime: WorkerRuntime = app.slipway_runtime

    def close_runtime(**_: Any) -> None:
        runtime.close()

    def keep_our_logging(**_: Any) -> None:
        # Connecting any receiver stops Celery from replacing the logging configuration.
        return None

    signals.setup_logging.connect(keep_our_logging, weak=False)
    signals.worker_process_shutdown.connect(close_runtime, weak=False)
    signals.worker_shutdown.connect(close_runtime, weak=False)
    # Metrics on WORKER_METRICS_PORT (worker only, not beat), Sentry and traces per child.
    install_worker_observability(app, runtime.settings)
