"""Order schema family."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slipway.orders.models import OrderStatus
from slipway.platform.schema_types import json_number_only

MAX_LINES = 50
MAX_QUANTITY = 1000
#: Below int64's maximum and exactly representable as a float: FastAPI writes body-schema
#: bounds as floats, and 2**63 - 1 became 9.223372036854776e18, i.e. 2**63, which the schema
#: then promised to accept (found by schemathesis).
MAX_PRODUCT_ID = 2**62


class OrderLineCreate(BaseModel):
    # Unknown fields (such as a client-sent "price") are ignored, never trusted.
    model_config = ConfigDict(extra="ignore")

    product_id: Annotated[int, Field(ge=1, le=MAX_PRODUCT_ID)]
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]

    # JSON numbers only: lax mode accepted `true` and `"3"` (schemathesis).
    _numbers = field_validator("product_id", "quantity", mode="before")(json_number_only)


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
