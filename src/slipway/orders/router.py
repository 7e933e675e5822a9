"""Order HTTP routes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from sqlalchemy import select

from slipway.identity.deps import CurrentUser, StaffUser
from slipway.identity.models import User
from slipway.orders.errors import IdempotencyKeyRequiredError
from slipway.orders.models import OrderStatus
from slipway.orders.schemas import IdempotencyKey, OrderCreate, OrderRead, OrderStatusChange
from slipway.orders.service import Actor, OrderService
from slipway.platform.db.session import SessionDep
from slipway.platform.errors import PermissionDeniedError
from slipway.platform.pagination import CURSOR_MAX_LENGTH, Page, cursor_codec
from slipway.platform.ratelimit.deps import RateLimit
from slipway.platform.services import ServicesDep

router = APIRouter(prefix="/orders", tags=["orders"])


async def get_orders(session: SessionDep, services: ServicesDep) -> OrderService:
    return OrderService(session, services)


OrdersDep = Annotated[OrderService, Depends(get_orders)]
OrderId = Annotated[uuid.UUID, Path()]


async def _actor(principal: CurrentUser) -> Actor:
    return Actor(user_id=principal.user_id, is_staff=principal.is_staff)


ActorDep = Annotated[Actor, Depends(_actor)]


async def _require_verified(principal: CurrentUser, session: SessionDep) -> None:
    verified = await session.scalar(select(User.email_verified).where(User.id == principal.user_id))
    if not verified:
        raise PermissionDeniedError(
            "Verify your e-mail address before placing orders.", code="email_not_verified"
        )


@router.post(
    "",
    response_model=OrderRead,
    status_code=status.HTTP_201_CREATED,
    summary="Place an order",
    dependencies=[Depends(_require_verified), Depends(RateLimit("orders"))],
)
async def create_order(
    data: OrderCreate,
    request: Request,
    orders: OrdersDep,
    actor: ActorDep,
    idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
) -> Response:
    """Requires an Idempotency-Key: retries with the same key and body replay the original
    response; the same key with another body is a 422."""
    if idempotency_key is None:
        raise IdempotencyKeyRequiredError
    created = await orders.create_order(actor, data, idempotency_key)
    order_id = OrderRead.model_validate_json(created.body).id
    headers = {"Location": str(request.url_for("get_order", order_id=order_id))}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        created.body,
        status_code=created.status_code,
        media_type="application/json",
        headers=headers,
    )


@router.get("", response_model=Page[OrderRead], summary="List orders")
async def list_orders(
    orders: OrdersDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_LENGTH)] = None,
    status_filter: Annotated[OrderStatus | None, Query(alias="status")] = None,
    all_users: Annotated[bool, Query(description="Staff: list every customer's orders.")] = False,
    user_id: Annotated[uuid.UUID | None, Query(description="Staff: one customer.")] = None,
) -> Page[OrderRead]:
    """Customers see their own orders; staff may list everyone's with filters."""
    if (all_users or user_id is not None) and not actor.is_staff:
        raise PermissionDeniedError("Only staff may list other customers' orders.")
    settings = orders.services.settings
    return await orders.list_orders(
        actor,
        cursor_codec(settings.secret_key.get_secret_value()),
        limit=limit,
        cursor=cursor,
        status=status_filter,
        user_id=user_id,
        all_users=all_users or user_id is not None,
    )


@router.get("/{order_id}", response_model=OrderRead, summary="Get an order")
async def get_order(order_id: OrderId, orders: OrdersDep, actor: ActorDep) -> OrderRead:
    """Only the owner (or staff) sees an order; anyone else gets 404."""
    return await orders.get_order(actor, order_id)


@router.post("/{order_id}/status", response_model=OrderRead, summary="Change an order's status")
async def change_order_status(
    order_id: OrderId, data: OrderStatusChange, orders: OrdersDep, _: StaffUser
) -> OrderRead:
    """Staff only: pending → paid → shipped, or pending|paid → cancelled (restocks)."""
    return await orders.change_status(order_id, data.status)
