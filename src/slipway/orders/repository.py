"""Order and idempotency queries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.catalog.models import Product
from slipway.orders.models import IdempotencyRecord, Order
from slipway.platform.db.base import utcnow


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, order_id: uuid.UUID) -> Order | None:
        return await self.session.get(Order, order_id)

    async def add(self, order: Order) -> Order:
        self.session.add(order)
        await self.session.flush()
        return order

    async def list_page(
        self,
        *,
        limit: int,
        user_id: uuid.UUID | None,
        status: str | None,
        position: tuple[datetime, uuid.UUID] | None,
    ) -> list[Order]:
        stmt = select(Order)
        if user_id is not None:
            stmt = stmt.where(Order.user_id == user_id)
        if status is not None:
            stmt = stmt.where(Order.status == status)
        if position is not None:
            stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(*position))
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit + 1)
        return list((await self.session.scalars(stmt)).all())

    async def existing_product_ids(self, product_ids: list[int]) -> set[int]:
        rows = await self.session.scalars(
            select(Product.id).where(Product.id.in_(product_ids), Product.status == "active")
        )
        return set(rows.all())

    async def take_stock(self, product_id: int, quantity: int) -> tuple[int, str] | None:
        """Atomically decrement stock when enough remains; returns (price, currency).

        One conditional UPDATE ... RETURNING: two buyers can never both take the last unit,
        and the price comes from the same row version the stock came from.
        """
        result = await self.session.execute(
            update(Product)
            .where(Product.id == product_id, Product.stock >= quantity, Product.status == "active")
            .values(stock=Product.stock - quantity, version=Product.version + 1)
            .returning(Product.price_minor, Product.currency)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        return (int(row[0]), str(row[1])) if row is not None else None

    async def return_stock(self, product_id: int, quantity: int) -> None:
        await self.session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(stock=Product.stock + quantity, version=Product.version + 1)
            .execution_options(synchronize_session=False)
        )

    async def transition(self, order_id: uuid.UUID, from_status: str, to_status: str) -> bool:
        """Compare-and-set on status, so two concurrent transitions cannot both apply."""
        result = await self.session.execute(
            update(Order)
            .where(Order.id == order_id, Order.status == from_status)
            .values(status=to_status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self, user_id: uuid.UUID, key: str, request_hash: str, expires_at: datetime
    ) -> bool:
        """Insert the key; False when it already exists.

        On PostgreSQL, ON CONFLICT DO NOTHING waits for a concurrent inserter of the same key
        to commit or roll back, so exactly one request wins and the others then read its
        stored response.
        """
        values: dict[str, Any] = {
            "user_id": user_id,
            "key": key,
            "request_hash": request_hash,
            "created_at": utcnow(),
            "expires_at": expires_at,
        }
        # Both dialects spell "insert unless the key exists" the same way.
        insert = (
            pg_insert if self.session.get_bind().dialect.name == "postgresql" else sqlite_insert
        )
        stmt = (
            insert(IdempotencyRecord)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get(self, user_id: uuid.UUID, key: str) -> IdempotencyRecord | None:
        return await self.session.scalar(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            .execution_options(populate_existing=True)
        )

    async def store_response(
        self, user_id: uuid.UUID, key: str, status_code: int, body: bytes
    ) -> None:
        await self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            .values(status_code=status_code, response_body=body)
            .execution_options(synchronize_session=False)
        )

    async def release_if_expired(self, user_id: uuid.UUID, key: str, now: datetime) -> bool:
        """Drop this key's record when it has expired (the purge may not have run yet)."""
        result = await self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.user_id == user_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.expires_at <= now,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def purge_expired(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.expires_at < now)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]
