"""Report and dashboard schemas."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

MAX_REPORT_DAYS = 366


def _iso_date_only(value: Any) -> Any:
    # Lax mode read JSON numbers as Unix timestamps; the schema promises ISO 8601 date
    # strings (found by schemathesis).
    if isinstance(value, int | float):
        raise PydanticCustomError("date_type", "must be an ISO 8601 date string (YYYY-MM-DD)")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]


class SalesReportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _range(self) -> SalesReportRequest:
        if self.end < self.start:
            raise ValueError("end must not be before start")
        if (self.end - self.start).days > MAX_REPORT_DAYS:
            raise ValueError(f"the range may span at most {MAX_REPORT_DAYS} days")
        return self


class ReportRead(BaseModel):
    id: uuid.UUID
    status: Literal["queued", "running", "succeeded", "failed"]
    start: date | None = None
    end: date | None = None
    rows: int | None = None
    size_bytes: int | None = None
    download_url: str | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class ReportAccepted(BaseModel):
    id: uuid.UUID
    status: Literal["queued"]
    status_url: str


class StatusTotals(BaseModel):
    status: str
    orders: int
    revenue_minor: int


class TopProduct(BaseModel):
    product_id: int
    name: str
    quantity: int
    revenue_minor: int


class LowStockProduct(BaseModel):
    product_id: int
    sku: str
    name: str
    stock: int


class DashboardRead(BaseModel):
    days: int
    since: datetime
    by_status: list[StatusTotals]
    top_products: list[TopProduct]
    low_stock: list[LowStockProduct]


class DashboardQuery(BaseModel):
    days: int = Field(default=30, ge=1, le=366)
    low_stock_threshold: int = Field(default=10, ge=0, le=1_000_000)
