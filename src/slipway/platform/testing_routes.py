"""Probe endpoints for the cache and rate-limit acceptance tests.

Mounted by the app factory only when ENVIRONMENT=testing; never in development, staging or
production, and never in the OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import os

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel

from slipway.platform.cache import CacheDep, cache_key
from slipway.platform.http_cache import REVALIDATE, conditional_response
from slipway.platform.ratelimit import RateLimit, body_field, client_ip

PREFIX = "/_test"
#: The policy /_test/limited declares; tests set it through RATE_LIMIT_POLICIES.
TESTING_POLICY = "testing"

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class LoginProbe(BaseModel):
    username: str


@router.get("/cache/{name}")
async def read_cached(
    request: Request,
    name: str,
    *,
    cache: CacheDep,
    tags: str = "",
    ttl: int | None = Query(default=None, ge=1),
    delay_ms: int = Query(default=0, ge=0, le=5_000),
) -> Response:
    """A cached value whose source counts its loads (per process)."""
    loads: dict[str, int] = request.app.state.testing_loads

    async def load() -> bytes:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        loads[name] = loads.get(name, 0) + 1
        return orjson.dumps({"name": name, "pid": os.getpid(), "loads": loads[name]})

    result = await cache.get_or_load(
        cache_key("testing", name), load, ttl, [t for t in tags.split(",") if t]
    )
    hit = "HIT" if result.hit else "MISS"
    return conditional_response(request, result.value, policy=REVALIDATE, headers={"X-Cache": hit})


@router.delete("/cache/{name}", status_code=204)
async def invalidate_cached(name: str, cache: CacheDep) -> Response:
    """Invalidate one entry, for every process."""
    await cache.invalidate(cache_key("testing", name))
    return Response(status_code=204)


@router.delete("/cache-tags/{tag}", status_code=204)
async def invalidate_tag(tag: str, cache: CacheDep) -> Response:
    """Invalidate every entry stored with `tag`."""
    await cache.invalidate_tag(tag)
    return Response(status_code=204)


@router.get("/limited", dependencies=[Depends(RateLimit(TESTING_POLICY))])
async def limited() -> dict[str, bool]:
    """Counted against the "testing" policy per client IP (and user)."""
    return {"ok": True}


@router.post(
    "/login",
    dependencies=[Depends(RateLimit("login", keys=[client_ip, body_field("username")]))],
)
async def login_probe(body: LoginProbe) -> dict[str, bool]:
    """Counted against "login" per IP and per username, as the auth routes will be."""
    return {"ok": True}


def install_testing_routes(app: FastAPI) -> None:
    app.state.testing_loads = {}
    app.include_router(router)
