"""Job kinds for the acceptance tests; loaded only when ENVIRONMENT=testing.

`testing.effect` writes one row into `testing_job_effects` (primary key: the caller's
key) in the job's transaction, so a test can count how often the effect happened. The
table lives in its own metadata: it is never part of the application's migrations.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from slipway.platform.db.base import utcnow
from slipway.platform.jobs.registry import JobContext, JobResult, job

testing_metadata = MetaData()

testing_job_effects = Table(
    "testing_job_effects",
    testing_metadata,
    Column("key", String(200), primary_key=True),
    Column("job_id", String(36), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


async def create_testing_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(testing_metadata.create_all)


class PlannedFailureError(RuntimeError):
    """The failure a test asked for."""


@job("testing.effect", max_retries=3)
async def record_effect(ctx: JobContext) -> JobResult:
    """Payload: key (str), sleep (seconds, before the effect), fail_times (attempts that fail)."""
    payload: dict[str, Any] = ctx.payload
    sleep = float(payload.get("sleep", 0))
    if sleep:
        await asyncio.sleep(sleep)
    if ctx.attempt <= int(payload.get("fail_times", 0)):
        raise PlannedFailureError(f"planned failure on attempt {ctx.attempt}")
    await ctx.session.execute(
        insert(testing_job_effects).values(
            key=str(payload["key"]), job_id=str(ctx.job_id), created_at=utcnow()
        )
    )
    return {"key": payload["key"], "attempt": ctx.attempt}
