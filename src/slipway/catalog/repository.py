"""Product queries. Hot reads use Core-style selects; search is backend specific."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, TextClause, literal, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.catalog.models import Product, ProductStatus
from slipway.catalog.schemas import ProductQuery, ProductSort
from slipway.catalog.search import fts5_query
from slipway.platform.db.base import utcnow

_SORT_COLUMNS = {
    ProductSort.CREATED_AT: Product.created_at,
    ProductSort.PRICE: Product.price_minor,
    ProductSort.NAME: Product.name,
}


def sort_column(sort: ProductSort) -> Any:
    return _SORT_COLUMNS[sort]


def sort_value(product: Product, sort: ProductSort) -> Any:
    value = getattr(product, sort_column(sort).key)
    return value.isoformat() if isinstance(value, datetime) else value


def _search_clause(session: AsyncSession, q: str) -> ColumnElement[bool] | TextClause:
    if session.get_bind().dialect.name == "postgresql":
        # NUL separates nothing a user can mean, and PostgreSQL refuses it in text (a 500).
        return text("products.search_vector @@ websearch_to_tsquery('english', :q)").bindparams(
            q=q.replace("\x00", " ")
        )
    fts = fts5_query(q)
    if fts is None:
        return text("1 = 0")
    return Product.id.in_(
        select(text("rowid"))
        .select_from(text("products_fts"))
        .where(text("products_fts MATCH :fts").bindparams(fts=fts))
    )


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: int) -> Product | None:
        return await self.session.get(Product, product_id)

    async def get_for_update(self, product_id: int) -> Product | None:
        """The current row, locked until the transaction ends (FOR UPDATE on PostgreSQL;
        SQLite has one writer at a time anyway), so a read-check-write cannot lose an update."""
        return await self.session.get(
            Product, product_id, with_for_update=True, populate_existing=True
        )

    async def get_many(
        self, product_ids: Sequence[int], *, for_update: bool = False
    ) -> list[Product]:
        stmt = select(Product).where(Product.id.in_(product_ids)).order_by(Product.id)
        if for_update:
            stmt = stmt.with_for_update()
        return list((await self.session.scalars(stmt)).all())

    async def get_by_sku(self, sku: str) -> Product | None:
        return await self.session.scalar(select(Product).where(Product.sku == sku))

    async def add(self, product: Product) -> Product:
        self.session.add(product)
        await self.session.flush()
        return product

    def _list_statement(
        self, query: ProductQuery, position: tuple[Any, int] | None
    ) -> Select[Product]:
        column = sort_column(query.sort)
        stmt = select(Product).where(Product.status == query.status.value)
        if query.min_price is not None:
            stmt = stmt.where(Product.price_minor >= query.min_price)
        if query.max_price is not None:
            stmt = stmt.where(Product.price_minor <= query.max_price)
        if query.q:
            stmt = stmt.where(_search_clause(self.session, query.q))
        if position is not None:
            last_value, last_id = position
            # A row-value comparison lets both backends seek the (status, sort, id) index,
            # so page 5,000 costs what page 1 costs.
            key = tuple_(column, Product.id)
            bound = tuple_(literal(last_value, column.type), literal(last_id, Product.id.type))
            stmt = stmt.where(key > bound if query.order == "asc" else key < bound)
        if query.order == "asc":
            stmt = stmt.order_by(column.asc(), Product.id.asc())
        else:
            stmt = stmt.order_by(column.desc(), Product.id.desc())
        return stmt.limit(query.limit + 1)

    async def list_page(
        self, query: ProductQuery, position: tuple[Any, int] | None
    ) -> list[Product]:
        """One page plus one row, which tells whether a next page exists."""
        return list((await self.session.scalars(self._list_statement(query, position))).all())

    async def decrement_stock(self, product_id: int, quantity: int) -> bool:
        """Conditional update: succeeds only while enough stock remains, under any concurrency."""
        result = await self.session.execute(
            update(Product)
            .where(Product.id == product_id, Product.stock >= quantity, Product.status == "active")
            .values(stock=Product.stock - quantity, version=Product.version + 1)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def archive(self, product_id: int) -> bool:
        """Archive an active product; False when it already was archived."""
        result = await self.session.execute(
            update(Product)
            .where(Product.id == product_id, Product.status == ProductStatus.ACTIVE.value)
            .values(
                status=ProductStatus.ARCHIVED.value,
                version=Product.version + 1,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def increment_stock(self, product_id: int, quantity: int) -> None:
        await self.session.execute(
            update(Product)
            .where(Product.id == product_id)
            .values(stock=Product.stock + quantity, version=Product.version + 1)
            .execution_options(synchronize_session=False)
        )
