"""Probe routes for the serving lifecycle tests (graceful SIGTERM, zero-downtime SIGHUP).

Mounted by the app factory only when ENVIRONMENT=testing; never in development, staging or
production, and never in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from fastapi import APIRouter, FastAPI, Query

PREFIX = "/_test"
#: Upper bound of /_test/slow, so a probe can never hold a worker for long.
MAX_SLOW_MS = 30_000

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/slow")
async def slow(ms: int = Query(default=1_000, ge=0, le=MAX_SLOW_MS)) -> dict[str, int]:
    """Answer after `ms` milliseconds: an in-flight request a shutdown must let finish."""
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms, "pid": os.getpid()}


@router.post("/echo")
async def echo(body: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON body: a non-idempotent request that must never be lost on reload."""
    return {"echo": body, "pid": os.getpid()}


def install_serving_testing_routes(app: FastAPI) -> None:
    app.include_router(router)
