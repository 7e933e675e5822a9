"""Webhook rules: registration behind the SSRF guard, secrets shown once, and the fan-out
of an event into one delivery job per subscribed endpoint."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.db.base import utcnow
from slipway.platform.services import Services
from slipway.webhooks.breaker import breakers_for
from slipway.webhooks.errors import (
    TooManyWebhooksError,
    WebhookNotFoundError,
    WebhookUrlBlockedError,
)
from slipway.webhooks.models import WebhookEndpoint
from slipway.webhooks.repository import WebhookRepository
from slipway.webhooks.schemas import (
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from slipway.webhooks.signing import SecretBox, generate_secret
from slipway.webhooks.ssrf import BlockedTargetError, check_target

log = structlog.get_logger("slipway.webhooks")

DELIVER_JOB = "webhooks.deliver"


class WebhookService:
    def __init__(self, session: AsyncSession, services: Services) -> None:
        self.session = session
        self.services = services
        self.repository = WebhookRepository(session)
        self.box = SecretBox(services.settings.secret_key.get_secret_value())

    async def _checked_url(self, url: str) -> str:
        try:
            await check_target(url, self.services.settings)
        except BlockedTargetError as error:
            raise WebhookUrlBlockedError(
                details=[{"field": "url", "message": error.reason}]
            ) from error
        return url

    async def _read(self, endpoint: WebhookEndpoint) -> WebhookEndpointRead:
        state = await breakers_for(self.services).state(endpoint.id)
        return WebhookEndpointRead.model_validate(endpoint).model_copy(
            update={"circuit_state": state}
        )

    async def _get(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        endpoint = await self.repository.get(endpoint_id)
        if endpoint is None:
            raise WebhookNotFoundError
        return endpoint

    async def create(
        self, data: WebhookEndpointCreate, created_by: uuid.UUID
    ) -> WebhookEndpointWithSecret:
        """Register an endpoint; the response carries its signing secret, once."""
        url = await self._checked_url(data.url)
        # Every event fans out to each subscribed endpoint inside the request's
        # transaction: the bound keeps that cost predictable.
        limit = self.services.settings.webhook_max_endpoints
        if await self.repository.count() >= limit:
            raise TooManyWebhooksError(details={"max": limit})
        secret = generate_secret()
        endpoint = await self.repository.add(
            WebhookEndpoint(
                url=url,
                event_types=list(data.event_types),
                description=data.description,
                is_active=data.is_active,
                secret_ciphertext=self.box.seal(secret),
                created_by=created_by,
            )
        )
        log.info("webhook_registered", endpoint_id=str(endpoint.id), events=endpoint.event_types)
        read = await self._read(endpoint)
        return WebhookEndpointWithSecret(**read.model_dump(), secret=secret)

    async def list_endpoints(self) -> list[WebhookEndpointRead]:
        return [await self._read(endpoint) for endpoint in await self.repository.list_all()]

    async def get(self, endpoint_id: uuid.UUID) -> WebhookEndpointRead:
        return await self._read(await self._get(endpoint_id))

    async def update(
        self, endpoint_id: uuid.UUID, data: WebhookEndpointUpdate
    ) -> WebhookEndpointRead:
        """Change an endpoint; a new URL passes the same SSRF checks as a new endpoint."""
        endpoint = await self._get(endpoint_id)
        changes = data.model_dump(exclude_unset=True)
        if changes.get("url") is not None:
            endpoint.url = await self._checked_url(changes["url"])
        if changes.get("event_types") is not None:
            endpoint.event_types = list(changes["event_types"])
        if "description" in changes:
            endpoint.description = changes["description"]
        if changes.get("is_active") is not None:
            endpoint.is_active = changes["is_active"]
        endpoint.updated_at = utcnow()
        await self.session.flush()
        return await self._read(endpoint)

    async def rotate_secret(self, endpoint_id: uuid.UUID) -> WebhookEndpointWithSecret:
        """Replace the signing secret; the new one is shown once."""
        endpoint = await self._get(endpoint_id)
        secret = generate_secret()
        endpoint.secret_ciphertext = self.box.seal(secret)
        endpoint.updated_at = utcnow()
        await self.session.flush()
        log.info("webhook_secret_rotated", endpoint_id=str(endpoint.id))
        read = await self._read(endpoint)
        return WebhookEndpointWithSecret(**read.model_dump(), secret=secret)

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        endpoint = await self._get(endpoint_id)
        await self.repository.delete(endpoint)
        await breakers_for(self.services).forget(endpoint_id)
        log.info("webhook_deleted", endpoint_id=str(endpoint_id))

    async def deliveries(self, endpoint_id: uuid.UUID, limit: int) -> list[WebhookDeliveryRead]:
        await self._get(endpoint_id)
        rows = await self.repository.deliveries(endpoint_id, limit)
        return [WebhookDeliveryRead.model_validate(row) for row in rows]


async def queue_webhook_event(
    session: AsyncSession, services: Services, event_type: str, data: dict[str, Any]
) -> int:
    """Queue one delivery job per active endpoint subscribed to `event_type`.

    The jobs are rows in the caller's transaction (sent after its commit), so an event
    is delivered if and only if the change that caused it committed. Returns the count.
    """
    endpoints = await WebhookRepository(session).subscribed(event_type)
    occurred_at = utcnow().isoformat()
    for endpoint in endpoints:
        message_id = f"msg_{uuid.uuid4().hex}"
        body = orjson.dumps({"type": event_type, "timestamp": occurred_at, "data": data})
        await services.jobs.enqueue(
            session,
            DELIVER_JOB,
            {
                "endpoint_id": str(endpoint.id),
                "message_id": message_id,
                "event_type": event_type,
                # The exact bytes every attempt sends and signs.
                "body": body.decode(),
            },
        )
    return len(endpoints)
