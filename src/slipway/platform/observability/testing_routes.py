"""Probe endpoints for the observability acceptance tests (metrics, Sentry, tracing).

Mounted by the app factory only when ENVIRONMENT=testing; never in development, staging or
production, and never in the OpenAPI schema.
"""

from __future__ import annotations

import os

import structlog
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from slipway.platform.db.session import SessionDep

PREFIX = "/_test/observability"

log = structlog.get_logger("slipway.testing")
router = APIRouter(prefix=PREFIX, include_in_schema=False)


class ForcedError(RuntimeError):
    """Raised on purpose by /boom: a 500 the tests can trigger."""


@router.get("/boom")
async def boom() -> None:
    """Always fails: the unhandled-exception path (500 envelope, log, Sentry)."""
    log.info("about_to_fail")
    raise ForcedError("forced failure for the observability tests")


@router.get("/pid")
async def pid() -> dict[str, int]:
    """Which worker process answered."""
    return {"pid": os.getpid()}


@router.get("/items/{item_id}")
async def read_item(item_id: int, session: SessionDep) -> dict[str, int]:
    """A path-parameter route that runs one SQL statement (spans, cardinality)."""
    log.info("item_read", item_id=item_id)
    value = (
        await session.execute(text("SELECT CAST(:item_id AS BIGINT)"), {"item_id": item_id})
    ).scalar_one()
    return {"item_id": int(value)}


def install_observability_testing_routes(app: FastAPI) -> None:
    app.include_router(router)
