"""Product schema family: Create, Update (all optional), Read, Page[Read]."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.json_schema import SkipJsonSchema

from slipway.catalog.models import ProductStatus
from slipway.platform.schema_types import NO_NUL_PATTERN, json_number_only

Sku = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_upper=True,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
    ),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL_PATTERN),
]
Description = Annotated[str, StringConstraints(max_length=5000, pattern=NO_NUL_PATTERN)]
Currency = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, pattern=r"^[A-Za-z]{3}$")
]
#: Integer minor units (cents); floats never carry money. Body models accept JSON numbers only
#: (`json_number_only`): lax mode stored `true` and `"5"` as 1 and 5 (schemathesis).
PriceMinor = Annotated[int, Field(ge=0, le=1_000_000_000_00)]
Stock = Annotated[int, Field(ge=0, le=10_000_000)]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    description: Description = ""
    price_minor: PriceMinor
    currency: Currency = "USD"
    stock: Stock = 0

    _numbers = field_validator("price_minor", "stock", mode="before")(json_number_only)


class ProductUpdate(BaseModel):
    """Fields staff may change with PATCH; stock changes go through restock and orders."""

    model_config = ConfigDict(extra="forbid")

    # `SkipJsonSchema[None]`: these may be omitted but not null, and the schema says so (it
    # documented null as valid, which `_not_null` then refused; found by schemathesis).
    name: Name | SkipJsonSchema[None] = None
    description: Description | None = None
    price_minor: PriceMinor | SkipJsonSchema[None] = None
    currency: Currency | SkipJsonSchema[None] = None

    _numbers = field_validator("price_minor", mode="before")(json_number_only)

    @field_validator("name", "price_minor", "currency")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class RestockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: Annotated[int, Field(ge=1, le=1_000_000)]

    _numbers = field_validator("quantity", mode="before")(json_number_only)


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    description: str
    price_minor: int
    currency: str
    stock: int
    status: ProductStatus
    version: int
    created_at: datetime
    updated_at: datetime


class ProductSort(StrEnum):
    CREATED_AT = "created_at"
    PRICE = "price"
    NAME = "name"


SortOrder = Literal["asc", "desc"]


class ProductQuery(BaseModel):
    """Validated list parameters (the router builds it from query parameters)."""

    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=1024)
    status: ProductStatus = ProductStatus.ACTIVE
    min_price: int | None = Field(default=None, ge=0)
    max_price: int | None = Field(default=None, ge=0)
    sort: ProductSort = ProductSort.CREATED_AT
    order: SortOrder = "desc"
    q: str | None = Field(default=None, min_length=1, max_length=200)
