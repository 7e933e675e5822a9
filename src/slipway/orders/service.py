"""Order rules: idempotent creation, stock that never goes negative, enforced transitions.
Side effects (mail, events, cache invalidation) are queued for after the commit."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.models import User
from slipway.orders.errors import (
    IdempotencyKeyReusedError,
    InsufficientStockError,
    InvalidTransitionError,
    MixedCurrencyError,
    OrderNotFoundError,
    UnknownProductsError,
)
from slipway.orders.models import TRANSITIONS, Order, OrderLine, OrderStatus
from slipway.orders.repository import IdempotencyRepository, OrderRepository
from slipway.orders.schemas import OrderCreate, OrderRead
from slipway.platform.db.base import utcnow
from slipway.platform.db.session import after_commit
from slipway.platform.errors import ConflictError
from slipway.platform.events.models import Audience, Event
from slipway.platform.mail.service import queue_mail
from slipway.platform.pagination import CursorCodec, InvalidCursorError, Page
from slipway.platform.services import Services
from slipway.webhooks.service import queue_webhook_event

IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting: enough to scope reads and authorise transitions."""

    user_id: uuid.UUID
    is_staff: bool
    email: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedOrder:
    status_code: int
    body: bytes
    replayed: bool


def request_fingerprint(data: OrderCreate) -> str:
    # Canonical form: the validated model, so whitespace or key order never matter.
    canonical = orjson.dumps(data.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def _seek_position(position: list[Any]) -> tuple[datetime, uuid.UUID]:
    """(created_at, id) from a signed cursor; another release's format is a 422, not a 500."""
    try:
        created_at, order_id = position
        return datetime.fromisoformat(created_at), uuid.UUID(order_id)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidCursorError(details=[{"field": "cursor", "message": "bad position"}]) from exc


class OrderService:
    def __init__(self, session: AsyncSession, services: Services) -> None:
        self.session = session
        self.services = services
        self.orders = OrderRepository(session)
        self.idempotency = IdempotencyRepository(session)

    async def create_order(
        self, actor: Actor, data: OrderCreate, idempotency_key: str
    ) -> CreatedOrder:
        """Create an order once per Idempotency-Key; retries get the stored response."""
        fingerprint = request_fingerprint(data)
        now = utcnow()
        expires_at = now + IDEMPOTENCY_TTL
        claimed = await self.idempotency.claim(
            actor.user_id, idempotency_key, fingerprint, expires_at
        )
        if not claimed and await self.idempotency.release_if_expired(
            actor.user_id, idempotency_key, now
        ):
            # An expired key is free again, whether or not the purge has run.
            claimed = await self.idempotency.claim(
                actor.user_id, idempotency_key, fingerprint, expires_at
            )
        if not claimed:
            record = await self.idempotency.get(actor.user_id, idempotency_key)
            if record is None:  # expired and purged between the two statements
                raise ConflictError("Retry the request.", code="idempotency_conflict")
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReusedError
            if record.status_code is None or record.response_body is None:
                raise ConflictError(
                    "A request with this Idempotency-Key is still being processed.",
                    code="idempotency_in_progress",
                )
            return CreatedOrder(record.status_code, record.response_body, replayed=True)

        order = await self._place(actor, data)
        body = OrderRead.model_validate(order).model_dump_json().encode()
        await self.idempotency.store_response(actor.user_id, idempotency_key, 201, body)
        await self._after_change(order, [line.product_id for line in order.lines], created=True)
        await self._queue_confirmation(order)
        return CreatedOrder(201, body, replayed=False)

    async def _place(self, actor: Actor, data: OrderCreate) -> Order:
        product_ids = [item.product_id for item in data.items]
        known = await self.orders.existing_product_ids(product_ids)
        unknown = [pid for pid in product_ids if pid not in known]
        if unknown:
            raise UnknownProductsError(
                details=[
                    {"field": "items", "product_id": pid, "message": "unknown product"}
                    for pid in unknown
                ]
            )
        lines: list[OrderLine] = []
        short: list[dict[str, object]] = []
        currencies: set[str] = set()
        # A fixed lock order (by product id) keeps concurrent multi-line orders deadlock-free.
        for item in sorted(data.items, key=lambda i: i.product_id):
            taken = await self.orders.take_stock(item.product_id, item.quantity)
            if taken is None:
                short.append({"product_id": item.product_id, "requested": item.quantity})
                continue
            price, currency = taken
            currencies.add(currency)
            lines.append(
                OrderLine(
                    product_id=item.product_id, quantity=item.quantity, unit_price_minor=price
                )
            )
        if short:
            # Raising rolls back every decrement made above, with the whole transaction.
            raise InsufficientStockError(details=short)
        if len(currencies) > 1:
            raise MixedCurrencyError(details=sorted(currencies))
        order = Order(
            user_id=actor.user_id,
            status=OrderStatus.PENDING.value,
            total_minor=sum(line.quantity * line.unit_price_minor for line in lines),
            currency=currencies.pop(),
            lines=lines,
        )
        await self.orders.add(order)
        await self.session.refresh(order, attribute_names=["lines", "created_at", "updated_at"])
        return order

    async def get_order(self, actor: Actor, order_id: uuid.UUID) -> OrderRead:
        order = await self.orders.get(order_id)
        # 404, not 403, for other people's orders: ids cannot be probed.
        if order is None or (order.user_id != actor.user_id and not actor.is_staff):
            raise OrderNotFoundError
        return OrderRead.model_validate(order)

    async def list_orders(
        self,
        actor: Actor,
        codec: CursorCodec,
        *,
        limit: int,
        cursor: str | None,
        status: OrderStatus | None = None,
        user_id: uuid.UUID | None = None,
        all_users: bool = False,
    ) -> Page[OrderRead]:
        owner = None if (all_users and actor.is_staff) else actor.user_id
        if all_users and actor.is_staff and user_id is not None:
            owner = user_id
        context = f"orders:{owner}:{status}"
        position = None
        if cursor:
            position = _seek_position(codec.decode(context, cursor))
        rows = await self.orders.list_page(
            limit=limit, user_id=owner, status=status.value if status else None, position=position
        )
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if has_more and rows:
            last = rows[-1]
            next_cursor = codec.encode(context, [last.created_at.isoformat(), str(last.id)])
        return Page[OrderRead](
            items=[OrderRead.model_validate(row) for row in rows], next_cursor=next_cursor
        )

    async def change_status(self, order_id: uuid.UUID, new_status: OrderStatus) -> OrderRead:
        """Staff move an order along pending → paid → shipped, or cancel it."""
        order = await self.orders.get(order_id)
        if order is None:
            raise OrderNotFoundError
        current = OrderStatus(order.status)
        if new_status not in TRANSITIONS[current]:
            raise InvalidTransitionError(
                details={
                    "from": current.value,
                    "to": new_status.value,
                    "allowed": sorted(s.value for s in TRANSITIONS[current]),
                }
            )
        if not await self.orders.transition(order_id, current.value, new_status.value):
            raise InvalidTransitionError("The order changed concurrently; fetch it again.")
        touched: list[int] = []
        if new_status is OrderStatus.CANCELLED:
            for line in order.lines:
                await self.orders.return_stock(line.product_id, line.quantity)
                touched.append(line.product_id)
        await self.session.refresh(order)
        await self._after_change(order, touched, created=False)
        return OrderRead.model_validate(order)

    async def _after_change(self, order: Order, product_ids: list[int], *, created: bool) -> None:
        """Cache invalidation, the owner/staff event and webhook deliveries, all only once
        committed (webhook jobs are rows in this transaction, sent after the commit)."""
        services = self.services
        cache = services.cache

        async def invalidate_products() -> None:
            await cache.invalidate(*(cache.key("product", pid) for pid in product_ids))

        if product_ids and cache is not None:
            after_commit(self.session, invalidate_products)
        event_type = "order.created" if created else "order.status_changed"
        data = {
            "order_id": str(order.id),
            "status": order.status,
            "total_minor": order.total_minor,
            "currency": order.currency,
        }
        if services.events is not None:
            services.events.publish_after_commit(
                self.session,
                Event(
                    type=event_type,
                    data=data,
                    # Only the owner's connections and staff ever see an order's events.
                    audience=Audience.to_users(order.user_id, staff=True),
                ),
            )
        await queue_webhook_event(self.session, services, event_type, data)

    async def _queue_confirmation(self, order: Order) -> None:
        email = await self.session.scalar(select(User.email).where(User.id == order.user_id))
        if email is None or self.services.jobs is None:
            return
        await queue_mail(
            self.services.jobs,
            self.session,
            to=email,
            template="order_confirmation",
            context={
                "order_id": str(order.id),
                "order_id_short": str(order.id)[:8],
                "status": order.status,
                "currency": order.currency,
                "total": f"{order.total_minor / 100:.2f}",
                "lines": [
                    {
                        "product_id": line.product_id,
                        "quantity": line.quantity,
                        "unit_price": f"{line.unit_price_minor / 100:.2f}",
                    }
                    for line in order.lines
                ],
            },
            owner_id=order.user_id,
        )
