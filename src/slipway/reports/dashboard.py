"""The staff dashboard: three aggregate queries, whatever the data size, cached briefly."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.catalog.models import Product
from slipway.orders.models import Order, OrderLine, OrderStatus
from slipway.platform.db.base import utcnow
from slipway.reports.schemas import (
    DashboardQuery,
    DashboardRead,
    LowStockProduct,
    StatusTotals,
    TopProduct,
)

TOP_PRODUCTS = 10
LOW_STOCK_LIMIT = 20


async def build_dashboard(session: AsyncSession, query: DashboardQuery) -> DashboardRead:
    since = utcnow() - timedelta(days=query.days)
    by_status = await session.execute(
        select(Order.status, func.count(Order.id), func.coalesce(func.sum(Order.total_minor), 0))
        .where(Order.created_at >= since)
        .group_by(Order.status)
        .order_by(Order.status)
    )
    quantity = func.sum(OrderLine.quantity).label("quantity")
    top = await session.execute(
        select(
            OrderLine.product_id,
            Product.name,
            quantity,
            func.sum(OrderLine.quantity * OrderLine.unit_price_minor),
        )
        .join(Order, Order.id == OrderLine.order_id)
        .join(Product, Product.id == OrderLine.product_id)
        .where(Order.created_at >= since, Order.status != OrderStatus.CANCELLED.value)
        .group_by(OrderLine.product_id, Product.name)
        .order_by(quantity.desc(), OrderLine.product_id)
        .limit(TOP_PRODUCTS)
    )
    low = await session.execute(
        select(Product.id, Product.sku, Product.name, Product.stock)
        .where(Product.status == "active", Product.stock <= query.low_stock_threshold)
        .order_by(Product.stock, Product.id)
        .limit(LOW_STOCK_LIMIT)
    )
    return DashboardRead(
        days=query.days,
        since=since,
        by_status=[
            StatusTotals(status=s, orders=int(n), revenue_minor=int(r)) for s, n, r in by_status
        ],
        top_products=[
            TopProduct(product_id=p, name=name, quantity=int(q), revenue_minor=int(r))
            for p, name, q, r in top
        ],
        low_stock=[
            LowStockProduct(product_id=p, sku=sku, name=name, stock=stock)
            for p, sku, name, stock in low
        ],
    )
