"""Stream a sales report to CSV in chunks: memory stays flat however many orders match."""

from __future__ import annotations

import asyncio
import csv
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.orders.models import Order

CHUNK_ROWS = 2000
HEADER = ("order_id", "created_at", "customer_id", "status", "currency", "total_minor")


def day_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, end+1 00:00) in UTC: the end date is inclusive."""
    return (
        datetime.combine(start, time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )


async def write_sales_csv(session: AsyncSession, start: date, end: date, target: Path) -> int:
    """Write the orders created in [start, end] to `target`; returns the row count."""
    lower, upper = day_bounds(start, end)
    stmt = (
        select(
            Order.id,
            Order.created_at,
            Order.user_id,
            Order.status,
            Order.currency,
            Order.total_minor,
        )
        .where(Order.created_at >= lower, Order.created_at < upper)
        .order_by(Order.created_at, Order.id)
        # Server-side cursor on PostgreSQL; fetchmany on SQLite. Never the whole result.
        .execution_options(yield_per=CHUNK_ROWS)
    )
    rows = 0
    handle = await asyncio.to_thread(target.open, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(handle)
        await asyncio.to_thread(writer.writerow, HEADER)
        result = await session.stream(stmt)
        async for partition in result.partitions(CHUNK_ROWS):
            chunk: list[tuple[Any, ...]] = [
                (str(oid), created.isoformat(), str(uid), status, currency, total)
                for oid, created, uid, status, currency, total in partition
            ]
            await asyncio.to_thread(writer.writerows, chunk)
            rows += len(chunk)
    finally:
        await asyncio.to_thread(handle.close)
    return rows
