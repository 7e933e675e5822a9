"""The periodic purge of expired rows: one task (beat, or the embedded runner's timer) runs
every registered purge function, each in its own transaction.

Areas register theirs in their `tasks.py`:

    @purger("refresh_tokens")
    async def purge_refresh_tokens(session: AsyncSession, now: datetime, settings: Settings) -> int:
        ...  # delete what expired before `now`; return the number of rows deleted
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import structlog
from sqlalchemy import CursorResult, delete
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.db.base import utcnow
from slipway.platform.jobs.models import Job, JobStatus
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.jobs.purge")

PurgeFunction = Callable[[AsyncSession, datetime, Settings], Awaitable[int]]
P = TypeVar("P", bound=PurgeFunction)

#: Filled at import time by `@purger`; read by `run_purges`.
PURGERS: dict[str, PurgeFunction] = {}


def purger(name: str) -> Callable[[P], P]:
    """Register `async def f(session, now, settings) -> int` (rows deleted) as `name`."""

    def register(function: P) -> P:
        existing = PURGERS.get(name)
        if existing is not None and existing is not function:
            raise ValueError(f"purge function {name!r} is already registered")
        PURGERS[name] = function
        return function

    return register


@purger("jobs")
async def purge_finished_jobs(session: AsyncSession, now: datetime, settings: Settings) -> int:
    """Finished jobs (succeeded or failed) older than RETENTION_DAYS."""
    cutoff = now - timedelta(days=settings.retention_days)
    result = await session.execute(
        delete(Job).where(
            Job.status.in_([JobStatus.SUCCEEDED.value, JobStatus.FAILED.value]),
            Job.finished_at < cutoff,
        )
    )
    assert isinstance(result, CursorResult)
    return int(result.rowcount or 0)


async def run_purges(services: Services) -> dict[str, int]:
    """Run every purge function; one failing does not stop the others."""
    now = utcnow()
    deleted: dict[str, int] = {}
    for name, function in sorted(PURGERS.items()):
        try:
            async with services.session_factory() as session, session.begin():
                deleted[name] = await function(session, now, services.settings)
        except Exception:
            log.exception("purge_function_failed", purge=name)
    log.info("purge_done", deleted=deleted)
    return deleted
