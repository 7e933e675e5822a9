"""Order schema family."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slipway.orders.models import OrderStatus

MAX_LINES = 50
MAX_QUANTITY = 1000


class OrderLineCreate(BaseModel):
    # Unknown fields (such as a client-sent "price") are ignored, never trusted.
    model_config = ConfigDict(extra="ignore")

    # Strict: JSON `true` or `"3"` are not numbers (lax mode accepted them; schemathesis).
    product_id: Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY, strict=True)]


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    items: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=MAX_LINES)]

    @field_validator("items")
    @classmethod
    def _no_duplicate_lines(cls, items: list[OrderLineCreate]) -> list[OrderLineCreate]:
        counts = Counter(item.product_id for item in items)
        duplicates = sorted(pid for pid, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"duplicate lines for product ids {duplicates}; merge quantities")
        return items


class OrderLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: int
    quantity: int
    unit_price_minor: int


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    total_minor: int
    currency: str
    created_at: datetime
    updated_at: datetime
    lines: list[OrderLineRead]


class OrderStatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: OrderStatus


IdempotencyKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
