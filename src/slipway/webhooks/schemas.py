"""Webhook API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: The events an endpoint can subscribe to (the order events of the realtime channel).
EventType = Literal["order.created", "order.status_changed"]
EVENT_TYPES: tuple[EventType, ...] = ("order.created", "order.status_changed")
CircuitState = Literal["closed", "opened", "half-opened"]
DeliveryStatusName = Literal["succeeded", "failed", "blocked", "circuit_open"]


def _unique(values: list[EventType]) -> list[EventType]:
    return sorted(set(values))


EventTypes = Annotated[
    list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES)), AfterValidator(_unique)
]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2048,
        description="https URL (http only in development and testing). Its host must "
        "resolve to public addresses only.",
        examples=["https://hooks.example.com/slipway"],
    ),
]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl
    event_types: EventTypes
    description: Annotated[str | None, Field(max_length=200)] = None
    is_active: bool = True


class WebhookEndpointUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: WebhookUrl | None = None
    event_types: EventTypes | None = None
    description: Annotated[str | None, Field(max_length=200)] = None
    is_active: bool | None = None


class WebhookEndpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    event_types: list[EventType]
    description: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    circuit_state: CircuitState = "closed"


class WebhookEndpointWithSecret(WebhookEndpointRead):
    """Returned once, at creation and rotation: the secret is never shown again."""

    secret: str = Field(description="Signing secret (whsec_...). Store it now.")


class WebhookDeliveryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    message_id: str
    event_type: str
    job_id: uuid.UUID | None
    attempt: int
    status: DeliveryStatusName
    status_code: int | None
    duration_ms: int | None
    error: str | None
    response_excerpt: str | None
    created_at: datetime
