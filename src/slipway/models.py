"""Imports every area's models so Alembic sees the whole metadata."""

from __future__ import annotations

from slipway.catalog.models import Product
from slipway.identity.models import AuthSession, OneTimeToken, RefreshToken, User
from slipway.orders.models import IdempotencyRecord, Order, OrderLine
from slipway.platform.db.base import Base
from slipway.platform.jobs.models import Job
from slipway.webhooks.models import WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "AuthSession",
    "Base",
    "IdempotencyRecord",
    "Job",
    "OneTimeToken",
    "Order",
    "OrderLine",
    "Product",
    "RefreshToken",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
