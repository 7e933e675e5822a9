"""Deterministic demo and benchmark data: `slipway seed`.

Every row's key derives from `--seed` and its index, and inserts skip existing keys, so a
rerun with the same seed yields the same data (idempotent) and an interrupted run resumes.
Rows go in with batched multi-row INSERTs; 1M products take well under a minute.
"""

from __future__ import annotations

import random
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from slipway.catalog.models import Product
from slipway.identity.models import User
from slipway.orders.models import Order, OrderLine

BATCH = 5000
SEED_NAMESPACE = uuid.UUID("6f1c2d7e-4b7a-4f0e-9a53-5b1f0c9e2a11")
#: Everyone seeded can log in with this password (demo and benchmark data only).
SEED_PASSWORD = "seeded-password-123"  # noqa: S105 - documented demo credential

_ADJECTIVES = (
    "red",
    "blue",
    "green",
    "steel",
    "oak",
    "linen",
    "smart",
    "compact",
    "heavy",
    "light",
    "quiet",
    "rapid",
    "classic",
    "modern",
    "organic",
    "portable",
)
_NOUNS = (
    "kettle",
    "lamp",
    "chair",
    "desk",
    "backpack",
    "speaker",
    "notebook",
    "mug",
    "jacket",
    "bottle",
    "keyboard",
    "monitor",
    "blender",
    "tent",
    "drill",
    "camera",
)
_BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)

Progress = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class SeedCounts:
    users: int
    products: int
    orders: int


class SeedError(ValueError):
    """The requested data cannot be seeded (told to the user, not a traceback)."""


@dataclass(frozen=True, slots=True)
class _Catalogue:
    """Id and price of this seed's products by index, compact (8 bytes each): a million
    products cost 16 MB, not a million row objects."""

    ids: array[int]
    prices: array[int]


def product_sku(seed: int, index: int) -> str:
    return f"S{seed}-{index:08d}"


async def _catalogue(conn: AsyncConnection, seed_value: int, products: int) -> _Catalogue:
    """Look the ids up by SKU: ids are not contiguous when seeds share a database, when a
    run resumes, or when PostgreSQL spends sequence values on skipped (existing) rows."""
    ids: array[int] = array("q")
    prices: array[int] = array("q")
    # Zero-padded SKUs sort in index order.
    result = await conn.stream(
        select(Product.id, Product.price_minor)
        .where(Product.sku >= product_sku(seed_value, 0))
        .where(Product.sku <= product_sku(seed_value, max(products - 1, 0)))
        .where(func.length(Product.sku) == len(product_sku(seed_value, 0)))
        .order_by(Product.sku)
        .execution_options(yield_per=BATCH)
    )
    async for partition in result.partitions():
        for product_id, price in partition:
            ids.append(product_id)
            prices.append(price)
    return _Catalogue(ids, prices)


def user_id_for(seed: int, index: int) -> uuid.UUID:
    return uuid.uuid5(SEED_NAMESPACE, f"user:{seed}:{index}")


def order_id_for(seed: int, index: int) -> uuid.UUID:
    return uuid.uuid5(SEED_NAMESPACE, f"order:{seed}:{index}")


def seed_email(seed: int, index: int) -> str:
    return f"user{index}@seed{seed}.example.com"


def _batches(total: int) -> Iterator[range]:
    for start in range(0, total, BATCH):
        yield range(start, min(start + BATCH, total))


def _insert_ignore(engine: AsyncEngine, table: Any) -> Any:
    dialect_insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(table).on_conflict_do_nothing()


async def seed(
    engine: AsyncEngine,
    *,
    seed_value: int,
    users: int,
    products: int,
    orders: int,
    password_hash: str,
    progress: Progress | None = None,
) -> SeedCounts:
    if orders and (users == 0 or products == 0):
        raise SeedError("orders need at least one user and one product")
    report = progress or (lambda _stage, _n: None)
    rng = random.Random(seed_value)  # noqa: S311 - demo data, not security
    async with engine.begin() as conn:
        for batch in _batches(users):
            rows = [
                {
                    "id": user_id_for(seed_value, i),
                    "email": seed_email(seed_value, i),
                    "password_hash": password_hash,
                    "full_name": f"Seed User {i}",
                    "role": "customer",
                    "is_active": True,
                    "email_verified": True,
                    "password_changed_at": _BASE_TIME,
                    "created_at": _BASE_TIME + timedelta(minutes=i),
                    "updated_at": _BASE_TIME + timedelta(minutes=i),
                }
                for i in batch
            ]
            await conn.execute(_insert_ignore(engine, User), rows)
            report("users", len(rows))

    async with engine.begin() as conn:
        for batch in _batches(products):
            rows = []
            for i in batch:
                price = rng.randint(100, 50_000)
                adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
                rows.append(
                    {
                        "sku": product_sku(seed_value, i),
                        "name": f"{adjective.title()} {noun} {i}",
                        "description": f"A {adjective} {noun} for everyday use. Item {i}.",
                        "price_minor": price,
                        "currency": "USD",
                        "stock": rng.randint(0, 500),
                        "status": "active" if rng.random() > 0.02 else "archived",
                        "version": 1,
                        "created_at": _BASE_TIME + timedelta(seconds=i * 7),
                        "updated_at": _BASE_TIME + timedelta(seconds=i * 7),
                    }
                )
            await conn.execute(_insert_ignore(engine, Product), rows)
            report("products", len(rows))

    async with engine.connect() as conn:
        catalogue = await _catalogue(conn, seed_value, products)
    if orders and len(catalogue.ids) < products:
        raise SeedError("some products of this seed are missing; rerun with the same --seed")
    async with engine.begin() as conn:
        statuses = ("pending", "paid", "shipped", "cancelled")
        for batch in _batches(orders):
            order_rows, line_rows = [], []
            for i in batch:
                order_id = order_id_for(seed_value, i)
                n_lines = rng.randint(1, 3)
                picks = rng.sample(range(products), k=min(n_lines, products))
                total = 0
                for pick in picks:
                    qty = rng.randint(1, 5)
                    unit = catalogue.prices[pick]
                    total += qty * unit
                    line_rows.append(
                        {
                            "order_id": order_id,
                            "product_id": catalogue.ids[pick],
                            "quantity": qty,
                            "unit_price_minor": unit,
                        }
                    )
                created = _BASE_TIME + timedelta(seconds=i * 60)
                order_rows.append(
                    {
                        "id": order_id,
                        "user_id": user_id_for(seed_value, rng.randrange(users)),
                        "status": rng.choice(statuses),
                        "total_minor": total,
                        "currency": "USD",
                        "created_at": created,
                        "updated_at": created,
                    }
                )
            await conn.execute(_insert_ignore(engine, Order), order_rows)
            # (order_id, product_id) is unique: a rerun skips the lines it already wrote.
            await conn.execute(_insert_ignore(engine, OrderLine), line_rows)
            report("orders", len(order_rows))
    return SeedCounts(users=users, products=products, orders=orders)
