"""Catalog rules: cached reads, optimistic-concurrency writes, invalidation and events
after commit."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from slipway.catalog.errors import (
    DuplicateSkuError,
    IfMatchRequiredError,
    ProductNotFoundError,
    StaleProductError,
)
from slipway.catalog.models import Product
from slipway.catalog.repository import ProductRepository, sort_value
from slipway.catalog.schemas import (
    ProductCreate,
    ProductQuery,
    ProductRead,
    ProductSort,
    ProductUpdate,
)
from slipway.platform.db.session import after_commit
from slipway.platform.events.models import Audience, Event
from slipway.platform.http_cache import strong_etag
from slipway.platform.pagination import CursorCodec, InvalidCursorError, Page
from slipway.platform.services import Services

PRODUCT_TAG = "products"


def serialise(product: Product) -> bytes:
    return ProductRead.model_validate(product).model_dump_json().encode()


def _seek_position(sort: ProductSort, position: list[Any]) -> tuple[Any, int]:
    """The (sort value, id) a signed cursor carries, checked: a cursor minted by another
    release (same secret, other format) is a 422, never a 500."""
    bad = InvalidCursorError(details=[{"field": "cursor", "message": "bad position"}])
    if len(position) != 2 or type(position[1]) is not int:
        raise bad
    value, last_id = position
    if sort is ProductSort.CREATED_AT:
        if not isinstance(value, str):
            raise bad
        try:
            return datetime.fromisoformat(value), last_id
        except ValueError as exc:
            raise bad from exc
    if type(value) is not (int if sort is ProductSort.PRICE else str):
        raise bad
    return value, last_id


def if_match_satisfied(if_match: str, etag: str) -> bool:
    """RFC 9110 If-Match: "*" or the current ETag by strong comparison (a weak validator
    never matches: it does not promise the bytes the client edited)."""
    if if_match.strip() == "*":
        return True
    return any(candidate.strip() == etag for candidate in if_match.split(","))


class CatalogService:
    def __init__(self, session: AsyncSession, services: Services) -> None:
        self.session = session
        self.services = services
        self.products = ProductRepository(session)

    # Reads -------------------------------------------------------------------------------

    async def get_product_bytes(self, product_id: int) -> tuple[bytes, bool]:
        """The product's JSON, through the shared cache; returns (body, cache_hit)."""

        async def load() -> bytes:
            product = await self.products.get(product_id)
            if product is None:
                raise ProductNotFoundError
            return serialise(product)

        cache = self.services.cache
        key = cache.key("product", product_id)
        body, hit = await cache.get_or_load(
            key, load, ttl=self.services.settings.cache_product_ttl, tags=(PRODUCT_TAG,)
        )
        return body, hit

    async def list_products(self, query: ProductQuery, codec: CursorCodec) -> Page[ProductRead]:
        context = self._cursor_context(query)
        position = None
        if query.cursor:
            position = _seek_position(query.sort, codec.decode(context, query.cursor))
        rows = await self.products.list_page(query, position)
        has_more = len(rows) > query.limit
        rows = rows[: query.limit]
        next_cursor = None
        if has_more and rows:
            last = rows[-1]
            next_cursor = codec.encode(context, [sort_value(last, query.sort), last.id])
        return Page[ProductRead](
            items=[ProductRead.model_validate(row) for row in rows], next_cursor=next_cursor
        )

    @staticmethod
    def _cursor_context(query: ProductQuery) -> str:
        # A cursor is only valid for the query that produced it.
        parts: list[Any] = [
            query.sort.value,
            query.order,
            query.status.value,
            query.min_price,
            query.max_price,
            query.q,
        ]
        return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()

    # Writes ------------------------------------------------------------------------------

    async def create_product(self, data: ProductCreate) -> ProductRead:
        if await self.products.get_by_sku(data.sku) is not None:
            raise DuplicateSkuError(details=[{"field": "sku", "message": "already exists"}])
        product = Product(**data.model_dump())
        try:
            async with self.session.begin_nested():
                await self.products.add(product)
        except IntegrityError as exc:  # a concurrent create won the race on the unique SKU
            raise DuplicateSkuError from exc
        await self.session.refresh(product)
        self._after_write(product)
        return ProductRead.model_validate(product)

    async def update_product(
        self, product_id: int, data: ProductUpdate, if_match: str | None
    ) -> ProductRead:
        if not if_match:
            raise IfMatchRequiredError
        product = await self._get_for_write(product_id)
        # The ETag of the current representation is the version token (RFC 9110 If-Match).
        if not if_match_satisfied(if_match, strong_etag(serialise(product))):
            raise StaleProductError
        changes = data.model_dump(exclude_unset=True)
        for field, value in changes.items():
            setattr(product, field, value)
        product.version += 1
        try:
            await self.session.flush()
        except StaleDataError as exc:  # a concurrent writer changed it after our read
            raise StaleProductError from exc
        await self.session.refresh(product)
        self._after_write(product)
        return ProductRead.model_validate(product)

    async def archive_product(self, product_id: int) -> ProductRead:
        await self._get_for_write(product_id)
        # One conditional UPDATE: of concurrent archive requests exactly one changes the row
        # (and bumps the version); the others find it archived. Idempotent.
        archived_now = await self.products.archive(product_id)
        product = await self._get_for_write(product_id)
        if archived_now:
            self._after_write(product)
        return ProductRead.model_validate(product)

    async def restock_product(self, product_id: int, quantity: int) -> ProductRead:
        await self._get_for_write(product_id)
        await self.products.increment_stock(product_id, quantity)
        product = await self._get_for_write(product_id)
        await self.session.refresh(product)
        self._after_write(product)
        return ProductRead.model_validate(product)

    async def _get_for_write(self, product_id: int) -> Product:
        # Locked: two editors holding the same ETag must not both pass the If-Match check.
        product = await self.products.get_for_update(product_id)
        if product is None:
            raise ProductNotFoundError
        return product

    def _after_write(self, product: Product) -> None:
        """Invalidate every instance's cache and announce the change, once committed."""
        product_id = product.id
        version = product.version
        cache = self.services.cache
        events = self.services.events

        async def invalidate() -> None:
            await cache.invalidate(cache.key("product", product_id))

        after_commit(self.session, invalidate)
        if events is not None:
            events.publish_after_commit(
                self.session,
                Event(
                    type="product.updated",
                    data={"id": product_id, "version": version},
                    audience=Audience.all(),
                ),
            )
