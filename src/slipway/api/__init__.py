"""The versioned public API: each business area contributes its router here."""

from __future__ import annotations

from fastapi import APIRouter

from slipway.catalog.router import router as catalog_router
from slipway.identity.router import router as identity_router
from slipway.orders.router import router as orders_router
from slipway.platform.jobs.router import router as jobs_router
from slipway.reports.router import router as reports_router
from slipway.webhooks.router import router as webhooks_router

api_router = APIRouter(prefix="/api/v1")
# The identity router carries the identity lifespan (hasher, token keys, caches).
api_router.include_router(identity_router)
api_router.include_router(jobs_router)
api_router.include_router(catalog_router)
api_router.include_router(orders_router)
api_router.include_router(reports_router)
api_router.include_router(webhooks_router)
