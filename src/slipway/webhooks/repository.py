"""Webhook queries."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.webhooks.models import WebhookDelivery, WebhookEndpoint


class WebhookRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        self.session.add(endpoint)
        await self.session.flush()
        await self.session.refresh(endpoint)
        return endpoint

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint | None:
        return await self.session.get(WebhookEndpoint, endpoint_id)

    async def count(self) -> int:
        return int(
            await self.session.scalar(select(func.count()).select_from(WebhookEndpoint)) or 0
        )

    async def list_all(self) -> list[WebhookEndpoint]:
        rows = await self.session.scalars(
            select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
        )
        return list(rows.all())

    async def subscribed(self, event_type: str) -> list[WebhookEndpoint]:
        """Active endpoints subscribed to `event_type` (filtered here: the list is small
        and JSON containment differs between PostgreSQL and SQLite)."""
        rows = await self.session.scalars(
            select(WebhookEndpoint).where(WebhookEndpoint.is_active.is_(True))
        )
        return [row for row in rows.all() if event_type in row.event_types]

    async def delete(self, endpoint: WebhookEndpoint) -> None:
        # Its delivery records go with it (ON DELETE CASCADE; SQLite runs with
        # foreign_keys=ON).
        await self.session.delete(endpoint)
        await self.session.flush()

    async def deliveries(self, endpoint_id: uuid.UUID, limit: int) -> list[WebhookDelivery]:
        rows = await self.session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id.desc())
            .limit(limit)
        )
        return list(rows.all())

    async def add_delivery(self, delivery: WebhookDelivery) -> None:
        self.session.add(delivery)
        await self.session.flush()

    async def purge_deliveries(self, before: datetime) -> int:
        result = await self.session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.created_at < before)
        )
        assert isinstance(result, CursorResult)
        return int(result.rowcount or 0)
