"""Order housekeeping: the periodic purge of expired Idempotency-Key records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from slipway.orders.repository import IdempotencyRepository
from slipway.platform.jobs.purge import purger
from slipway.platform.settings import Settings


@purger("idempotency_keys")
async def purge_idempotency_keys(session: AsyncSession, now: datetime, _settings: Settings) -> int:
    """Stored responses whose key expired (IDEMPOTENCY_TTL after first use)."""
    return await IdempotencyRepository(session).purge_expired(now)
