"""Webhook endpoints and the record of every delivery attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from slipway.platform.db.base import Base, TimestampMixin, utcnow


class DeliveryStatus(StrEnum):
    SUCCEEDED = "succeeded"
    #: The receiver answered non-2xx, or the connection failed or timed out.
    FAILED = "failed"
    #: The SSRF guard refused the target at delivery time; never retried.
    BLOCKED = "blocked"
    #: The endpoint's circuit breaker was open; nothing was sent, the job retries later.
    CIRCUIT_OPEN = "circuit_open"


class WebhookEndpoint(TimestampMixin, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: The signing secret, encrypted with a key derived from SECRET_KEY (signing.py): a
    #: database dump or backup alone does not let anyone forge deliveries.
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(default=None)


class WebhookDelivery(Base):
    """One attempt: a retry is a new row with the same message_id and attempt + 1."""

    __tablename__ = "webhook_deliveries"

    # SQLite autoincrements only an INTEGER PRIMARY KEY, not a BIGINT one.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    #: The `webhook-id` header: the same for every attempt of one event to one endpoint,
    #: so receivers can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    attempt: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(default=None)
    duration_ms: Mapped[int | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    #: The first bytes of the receiver's answer (bounded), for debugging a refusal.
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_webhook_deliveries_created_at", "created_at"),
    )
