"""`services.jobs`: enqueue a job inside the caller's transaction, send it after commit.

    job_id = await jobs.enqueue(session, "mail.send", {...}, owner_id=user.id)

The row is inserted (flushed) with the caller's other writes; the message goes to Celery,
or to the in-process runner, only from an `after_commit` callback, so a rolled-back
request leaves neither a row nor a message.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.db.session import after_commit
from slipway.platform.jobs.embedded import EmbeddedRunner
from slipway.platform.jobs.models import Job, JobStatus
from slipway.platform.jobs.registry import load_job_modules, registry
from slipway.platform.metrics import hooks as metrics
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

    from slipway.platform.services import Services

log = structlog.get_logger("slipway.jobs")


class Dispatcher(Protocol):
    async def dispatch(self, job_id: uuid.UUID, kind: str) -> None: ...

    async def aclose(self) -> None: ...


class EmbeddedDispatcher:
    def __init__(self, runner: EmbeddedRunner) -> None:
        self.runner = runner

    async def dispatch(self, job_id: uuid.UUID, kind: str) -> None:
        self.runner.submit(job_id)
        metrics.record_job("enqueued", kind)

    async def aclose(self) -> None:
        await self.runner.aclose()


class CeleryDispatcher:
    def __init__(self, settings: Settings) -> None:
        from slipway.platform.jobs.celery_app import create_celery_app

        self._queue = settings.jobs_queue
        # Not the process's "current" app: a worker process has its own.
        self.app: Celery = create_celery_app(settings, set_as_current=False)

    async def dispatch(self, job_id: uuid.UUID, kind: str) -> None:
        # kombu publishes synchronously (with its own short retry policy): keep it off
        # the event loop.
        await asyncio.to_thread(self._send, job_id, kind)
        metrics.record_job("enqueued", kind)
        log.info("job_dispatched", job_id=str(job_id), kind=kind, engine="celery")

    def _send(self, job_id: uuid.UUID, kind: str) -> None:
        from slipway.platform.jobs.celery_app import task_name

        self.app.send_task(
            task_name(kind), args=[str(job_id)], task_id=str(job_id), queue=self._queue
        )

    async def aclose(self) -> None:
        await asyncio.to_thread(self.app.close)


class JobQueue:
    """The jobs service: `enqueue` inside a transaction; delivery happens after commit."""

    def __init__(self, engine: Literal["celery", "embedded"], dispatcher: Dispatcher) -> None:
        self.engine = engine
        self.dispatcher = dispatcher

    async def enqueue(
        self,
        session: AsyncSession,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        owner_id: uuid.UUID | None = None,
    ) -> uuid.UUID:
        """Insert a `queued` job in `session`'s transaction; send it once that commits."""
        registry.get(kind)  # an unknown kind fails the caller now, not a worker later
        # Round-trip through orjson: UUIDs and datetimes become strings, and anything that
        # is not JSON fails here rather than at flush time or in the broker.
        normalised = orjson.loads(orjson.dumps(payload or {}))
        if not isinstance(normalised, dict):
            raise TypeError("a job payload must be a JSON object")
        job = Job(
            id=uuid.uuid4(),
            kind=kind,
            status=JobStatus.QUEUED.value,
            owner_id=owner_id,
            payload=normalised,
            attempts=0,
        )
        session.add(job)
        await session.flush()
        after_commit(session, functools.partial(self.dispatcher.dispatch, job.id, kind))
        log.info("job_enqueued", job_id=str(job.id), kind=kind)
        return job.id


async def open_jobs(services: Services) -> JobQueue:
    """Open the configured engine; its close (drain) is registered on the exit stack."""
    settings = services.settings
    load_job_modules(settings)
    dispatcher: Dispatcher
    if settings.jobs_engine == "celery":
        dispatcher = CeleryDispatcher(settings)
    else:
        runner = EmbeddedRunner(services)
        await runner.start()
        dispatcher = EmbeddedDispatcher(runner)
    services.exit_stack.push_async_callback(dispatcher.aclose)
    log.info("jobs_opened", engine=settings.jobs_engine, kinds=len(registry.specs()))
    return JobQueue(settings.jobs_engine, dispatcher)
