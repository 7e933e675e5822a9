"""The delivery job and the purge of old delivery records."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.jobs.purge import purger
from slipway.platform.jobs.registry import JobContext, JobResult, job
from slipway.platform.settings import Settings
from slipway.webhooks.delivery import Attempt, deliver
from slipway.webhooks.models import WebhookEndpoint
from slipway.webhooks.repository import WebhookRepository
from slipway.webhooks.service import DELIVER_JOB

#: With the jobs' backoff (JOBS_RETRY_BACKOFF * 2**n, full jitter, capped at
#: JOBS_RETRY_BACKOFF_MAX) eight retries span several minutes: longer than a breaker's
#: reset time, so a delivery outlives a short receiver outage.
DELIVERY_RETRIES = 8


@job(DELIVER_JOB, max_retries=DELIVERY_RETRIES)
async def deliver_webhook(ctx: JobContext) -> JobResult:
    """Payload: endpoint_id, message_id, event_type, body (the exact bytes to send)."""
    attempt = Attempt.from_payload(ctx.payload, ctx.job_id, ctx.attempt)
    endpoint = await ctx.session.get(WebhookEndpoint, attempt.endpoint_id)
    return await deliver(ctx.services, endpoint, attempt)


@purger("webhook_deliveries")
async def purge_webhook_deliveries(session: AsyncSession, now: datetime, settings: Settings) -> int:
    """Delivery records older than RETENTION_DAYS."""
    return await WebhookRepository(session).purge_deliveries(
        now - timedelta(days=settings.retention_days)
    )
