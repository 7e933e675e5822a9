"""Run one delivery of a job against its row in the `jobs` table.

The same function serves Celery and the embedded runner, so the state machine is one:

1. claim (short transaction): skip a finished job, else mark it running, attempts + 1;
2. run (second transaction): lock the row again, call the handler with this session and
   mark the job succeeded in the same commit. A worker that dies mid-run rolls the effect
   back with the status, and a duplicate delivery waits on the row lock, then sees
   `succeeded` and does nothing: database effects happen exactly once;
3. on error (third transaction): queued again with the error for a retry, or failed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import update

from slipway.platform.db.base import utcnow
from slipway.platform.db.session import run_after_commit
from slipway.platform.jobs.models import Job, JobStatus
from slipway.platform.jobs.registry import (
    JobContext,
    JobResult,
    UnknownJobKindError,
    registry,
)
from slipway.platform.metrics import hooks as metrics

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.jobs")

FINISHED = frozenset({JobStatus.SUCCEEDED.value, JobStatus.FAILED.value})
#: Deliveries beyond max_retries + 1 that a job survives: each lost worker (SIGKILL, OOM,
#: hard time limit) redelivers without counting as a retry, so a task that kills its
#: worker every time would otherwise loop forever.
REDELIVERY_ALLOWANCE = 3
MAX_ERROR_LENGTH = 2000


class JobOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: Failed this time; the caller schedules the next attempt (backoff with jitter).
    RETRY = "retry"
    #: Nothing to do: already finished, or no such row.
    SKIPPED = "skipped"


class JobTimeLimitError(Exception):
    """The handler ran past JOBS_SOFT_TIME_LIMIT and was cancelled."""


def describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text[:MAX_ERROR_LENGTH]


async def execute_job(services: Services, job_id: uuid.UUID, *, retries_done: int) -> JobOutcome:
    """Run one delivery of `job_id`; `retries_done` is how many retries preceded it."""
    settings = services.settings
    factory = services.session_factory
    bound = log.bind(job_id=str(job_id))

    async with factory() as session, session.begin():
        job = await session.get(Job, job_id, with_for_update=True)
        if job is None:
            bound.warning("job_missing")
            return JobOutcome.SKIPPED
        if job.status in FINISHED:
            bound.info("job_already_finished", status=job.status)
            return JobOutcome.SKIPPED
        try:
            spec = registry.get(job.kind)
        except UnknownJobKindError:
            _finish(job, JobStatus.FAILED, f"no handler for job kind {job.kind!r}")
            bound.error("job_unknown_kind", kind=job.kind)
            metrics.record_job("failed", job.kind)
            return JobOutcome.FAILED
        max_retries = spec.retries(settings)
        if job.attempts >= max_retries + 1 + REDELIVERY_ALLOWANCE:
            _finish(job, JobStatus.FAILED, "delivered too many times (its worker kept dying)")
            bound.error("job_redelivery_limit", kind=job.kind, attempts=job.attempts)
            metrics.record_job("failed", job.kind)
            return JobOutcome.FAILED
        job.status = JobStatus.RUNNING.value
        job.attempts += 1
        job.started_at = job.started_at or utcnow()
        attempt, kind, payload, owner_id = job.attempts, job.kind, dict(job.payload), job.owner_id
        queued_for = (utcnow() - job.created_at).total_seconds() if attempt == 1 else None
    bound = bound.bind(kind=kind, attempt=attempt)
    bound.info("job_started")
    metrics.record_job("started", kind, queued_for)
    run_started = time.perf_counter()

    try:
        async with factory() as session:
            async with session.begin():
                job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
                if job is None or job.status in FINISHED:
                    bound.info("job_finished_elsewhere")
                    return JobOutcome.SKIPPED
                context = JobContext(job_id, kind, payload, owner_id, attempt, session, services)
                result = await _run_handler(context, settings.jobs_soft_time_limit)
                job.result = result
                _finish(job, JobStatus.SUCCEEDED, None)
            await run_after_commit(session)
    except asyncio.CancelledError:
        # Shutdown interrupted the run: the effect rolled back, the job is queued again.
        await record_failure(services, job_id, "interrupted by shutdown", final=False)
        bound.warning("job_interrupted")
        raise
    except Exception as error:
        final = not spec.should_retry(error) or retries_done >= max_retries
        await record_failure(services, job_id, describe_error(error), final=final)
        if final:
            bound.error("job_failed", error=describe_error(error), exc_info=error)
            metrics.record_job("failed", kind, time.perf_counter() - run_started)
            return JobOutcome.FAILED
        bound.warning("job_retry", error=describe_error(error), retries_done=retries_done)
        metrics.record_job("retried", kind, time.perf_counter() - run_started)
        return JobOutcome.RETRY
    bound.info("job_succeeded")
    metrics.record_job("succeeded", kind, time.perf_counter() - run_started)
    return JobOutcome.SUCCEEDED


async def _run_handler(context: JobContext, limit: float) -> JobResult:
    # The soft limit is enforced here, inside the loop, so a handler is cancelled
    # cleanly; Celery's own soft and hard limits sit above it as a backstop.
    spec = registry.get(context.kind)
    try:
        async with asyncio.timeout(limit) as deadline:
            return await spec.handler(context)
    except TimeoutError as error:
        if deadline.expired():
            raise JobTimeLimitError(f"the job exceeded its soft time limit ({limit:g}s)") from error
        raise


def _finish(job: Job, status: JobStatus, error: str | None) -> None:
    job.status = status.value
    job.error = error
    job.finished_at = utcnow()


async def record_failure(services: Services, job_id: uuid.UUID, error: str, *, final: bool) -> None:
    values: dict[str, object] = {"error": error, "updated_at": utcnow()}
    if final:
        values.update(status=JobStatus.FAILED.value, finished_at=utcnow())
    else:
        values["status"] = JobStatus.QUEUED.value
    async with services.session_factory() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id, Job.status.not_in(list(FINISHED))).values(**values)
        )
