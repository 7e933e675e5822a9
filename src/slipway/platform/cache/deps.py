"""FastAPI dependency for the cache (reads the lifespan's services; no import cycle)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from slipway.platform.cache.service import CacheService


async def get_cache(request: Request) -> CacheService:
    cache: CacheService = request.app.state.services.cache
    return cache


CacheDep = Annotated[CacheService, Depends(get_cache)]
