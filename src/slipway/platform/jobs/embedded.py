"""The in-process job runner, used when no broker is configured (JOBS_BACKEND=embedded).

A fixed number of worker tasks drain one queue: the pool is bounded by
JOBS_EMBEDDED_CONCURRENCY and owned by the lifespan, which drains it at shutdown. Retries
wait the same exponential backoff with full jitter as Celery's `retry_backoff` (Celery's
own function computes it), and the job state machine is the same `execute_job`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

import structlog
from celery.utils.time import get_exponential_backoff_interval

from slipway.platform.jobs.execute import JobOutcome, execute_job
from slipway.platform.jobs.purge import run_purges

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.jobs.embedded")


class EmbeddedRunner:
    def __init__(self, services: Services) -> None:
        self._services = services
        settings = services.settings
        self._concurrency = settings.jobs_embedded_concurrency
        self._drain_timeout = float(settings.graceful_timeout)
        self._queue: asyncio.Queue[tuple[uuid.UUID, int]] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._retry_timers: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self._purge_task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"slipway-job-worker-{index}")
            for index in range(self._concurrency)
        ]
        self._purge_task = asyncio.create_task(self._purge_periodically(), name="slipway-purge")
        log.info("jobs_embedded_started", concurrency=self._concurrency)

    def submit(self, job_id: uuid.UUID, retries_done: int = 0) -> None:
        if self._closing:
            # The row stays `queued`; nothing is lost from the database, only this run.
            log.warning("job_not_dispatched_shutting_down", job_id=str(job_id))
            return
        self._queue.put_nowait((job_id, retries_done))
        log.info("job_dispatched", job_id=str(job_id), engine="embedded")

    async def _work(self) -> None:
        while True:
            job_id, retries_done = await self._queue.get()
            try:
                outcome = await execute_job(self._services, job_id, retries_done=retries_done)
            except Exception:
                # A database outage while recording state: the row stays as it was.
                log.exception("job_runner_error", job_id=str(job_id))
                outcome = JobOutcome.SKIPPED
            finally:
                self._queue.task_done()
            if outcome is JobOutcome.RETRY:
                self._schedule_retry(job_id, retries_done)

    def _schedule_retry(self, job_id: uuid.UUID, retries_done: int) -> None:
        settings = self._services.settings
        delay = get_exponential_backoff_interval(
            factor=settings.jobs_retry_backoff,
            retries=retries_done,
            maximum=settings.jobs_retry_backoff_max,
            full_jitter=True,
        )
        loop = asyncio.get_running_loop()
        self._retry_timers[job_id] = loop.call_later(
            delay, self._retry_due, job_id, retries_done + 1
        )
        log.info("job_retry_scheduled", job_id=str(job_id), countdown=delay)

    def _retry_due(self, job_id: uuid.UUID, retries_done: int) -> None:
        self._retry_timers.pop(job_id, None)
        self.submit(job_id, retries_done)

    async def _purge_periodically(self) -> None:
        interval = self._services.settings.jobs_purge_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await run_purges(self._services)
            except Exception:
                log.exception("purge_failed")

    async def aclose(self) -> None:
        """Stop taking work, finish what is queued within the graceful timeout, then cancel."""
        self._closing = True
        for handle in self._retry_timers.values():
            handle.cancel()
        if self._retry_timers:
            log.warning("jobs_retries_abandoned", count=len(self._retry_timers))
        self._retry_timers.clear()
        if self._purge_task is not None:
            self._purge_task.cancel()
        try:
            async with asyncio.timeout(self._drain_timeout):
                await self._queue.join()
        except TimeoutError:
            log.warning("jobs_drain_timeout", pending=self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        tasks = [*self._workers, *([self._purge_task] if self._purge_task else [])]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        log.info("jobs_embedded_stopped")
