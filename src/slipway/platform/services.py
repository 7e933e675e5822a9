"""The typed container of long-lived resources, opened by the lifespan and closed in
reverse. Nothing here connects at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from slipway.platform.db.engine import create_engine, create_session_factory
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.lifespan")


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    exit_stack: AsyncExitStack


def create_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must degrade requests quickly, not hang them.
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        health_check_interval=15,
        retry_on_timeout=False,
    )


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    async with AsyncExitStack() as stack:
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        redis: Redis | None = None
        if settings.redis_url:
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
        services = Services(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=redis,
            exit_stack=stack,
        )
        log.info(
            "services_opened",
            database=engine.url.get_backend_name(),
            redis=bool(redis),
            environment=settings.environment.value,
        )
        yield services
    log.info("services_closed")


def lifespan_for(settings: Settings) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with open_services(settings) as services:
            app.state.services = services
            yield {"services": services}

    return lifespan


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
