"""Products. Stock can never go negative: a CHECK constraint backs every code path."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from slipway.platform.db.base import Base, utcnow


class ProductStatus(StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class Product(Base):
    __tablename__ = "products"

    # BigInteger on PostgreSQL; SQLite needs INTEGER PRIMARY KEY to alias the rowid, which
    # FTS5's content table relies on.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default=ProductStatus.ACTIVE.value)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    # Every ORM update of a product carries `WHERE version = <the version read>` and fails
    # (StaleDataError) when another writer got there first: optimistic concurrency that holds
    # on SQLite too, whose reads take no lock. The service sets the new version itself.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}

    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_non_negative"),
        CheckConstraint("price_minor >= 0", name="price_non_negative"),
        CheckConstraint("status IN ('active', 'archived')", name="status_valid"),
        # Keyset pagination seeks on (filter, sort key, id) for every supported sort.
        Index("ix_products_status_created_at_id", "status", "created_at", "id"),
        Index("ix_products_status_price_minor_id", "status", "price_minor", "id"),
        Index("ix_products_status_name_id", "status", "name", "id"),
    )
