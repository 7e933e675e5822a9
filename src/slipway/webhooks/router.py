"""Webhook endpoint management: staff only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from slipway.identity.deps import StaffUser
from slipway.platform.db.session import SessionDep
from slipway.platform.services import ServicesDep
from slipway.webhooks.schemas import (
    WebhookDeliveryRead,
    WebhookEndpointCreate,
    WebhookEndpointRead,
    WebhookEndpointUpdate,
    WebhookEndpointWithSecret,
)
from slipway.webhooks.service import WebhookService

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


async def get_webhooks(session: SessionDep, services: ServicesDep, _: StaffUser) -> WebhookService:
    return WebhookService(session, services)


WebhooksDep = Annotated[WebhookService, Depends(get_webhooks)]
EndpointId = Annotated[uuid.UUID, Path()]


@router.post(
    "",
    response_model=WebhookEndpointWithSecret,
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
)
async def create_webhook(
    data: WebhookEndpointCreate, webhooks: WebhooksDep, staff: StaffUser
) -> WebhookEndpointWithSecret:
    """The URL must resolve to public addresses only. The signing secret is in this
    response and never shown again."""
    return await webhooks.create(data, created_by=staff.user_id)


@router.get("", response_model=list[WebhookEndpointRead], summary="List webhook endpoints")
async def list_webhooks(webhooks: WebhooksDep) -> list[WebhookEndpointRead]:
    """Every endpoint with its circuit-breaker state."""
    return await webhooks.list_endpoints()


@router.get("/{endpoint_id}", response_model=WebhookEndpointRead, summary="Get a webhook endpoint")
async def get_webhook(endpoint_id: EndpointId, webhooks: WebhooksDep) -> WebhookEndpointRead:
    """One endpoint with its circuit-breaker state."""
    return await webhooks.get(endpoint_id)


@router.patch(
    "/{endpoint_id}", response_model=WebhookEndpointRead, summary="Change a webhook endpoint"
)
async def update_webhook(
    endpoint_id: EndpointId, data: WebhookEndpointUpdate, webhooks: WebhooksDep
) -> WebhookEndpointRead:
    """A new URL passes the same checks as at registration."""
    return await webhooks.update(endpoint_id, data)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointWithSecret,
    summary="Rotate a webhook endpoint's signing secret",
)
async def rotate_webhook_secret(
    endpoint_id: EndpointId, webhooks: WebhooksDep
) -> WebhookEndpointWithSecret:
    """Deliveries from now on are signed with the new secret, shown once in this response."""
    return await webhooks.rotate_secret(endpoint_id)


@router.delete(
    "/{endpoint_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook endpoint",
)
async def delete_webhook(endpoint_id: EndpointId, webhooks: WebhooksDep) -> Response:
    """Queued deliveries to it are dropped; its delivery records are deleted."""
    await webhooks.delete(endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=list[WebhookDeliveryRead],
    summary="List an endpoint's delivery attempts",
)
async def list_webhook_deliveries(
    endpoint_id: EndpointId,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[WebhookDeliveryRead]:
    """Newest first: one row per attempt, with status code, duration and error."""
    return await webhooks.deliveries(endpoint_id, limit)
