"""The typed container of long-lived resources, opened by the lifespan and closed in
reverse. Nothing here connects at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Request
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from slipway.platform.cache.service import CacheService, open_cache
from slipway.platform.db.engine import create_engine, create_session_factory
from slipway.platform.events.bus import EventBus, open_events
from slipway.platform.jobs.runtime import JobQueue, open_jobs
from slipway.platform.mail.sender import Mailer, open_mailer
from slipway.platform.metrics.runtime import open_metrics
from slipway.platform.observability.tracing import instrument_engine
from slipway.platform.ratelimit.limiter import RateLimiterService, open_limiter
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.lifespan")


@dataclass(slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    exit_stack: AsyncExitStack
    # Opened before the container so they are never None (Redis or embedded memory).
    cache: CacheService  # platform/cache
    limiter: RateLimiterService  # platform/ratelimit
    mailer: Mailer  # platform/mail
    events: EventBus  # platform/events
    # Opened last, on the finished container (its embedded runner executes jobs with it),
    # so closed first: queued jobs drain while everything they use is still open.
    jobs: JobQueue = field(init=False)  # platform/jobs


def create_redis(url: str) -> Redis:
    # Short timeouts: a dead Redis must degrade requests quickly, not hang them.
    return Redis.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=1.0,
        health_check_interval=15,
        # One immediate retry on a new connection after a connection error. After a Redis
        # restart every pooled connection is dead, and `from_url` pools retry nothing: each
        # one failed its next command, and each failure put the rate limiter back into its
        # 1 s fail-open back-off, so limits stayed unenforced for seconds after Redis was
        # back (tests/reliability/test_redis_outage.py). Timeouts are not retried: a Redis
        # that hangs must not cost two timeouts.
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
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
            cache=await open_cache(settings, stack),
            limiter=await open_limiter(settings, redis, stack),
            mailer=open_mailer(settings),
            events=await open_events(settings, redis, stack),
        )
        services.jobs = await open_jobs(services)
        # Component hooks (each helper module adds its own `await open_x(services)` here,
        # registering its close callback on services.exit_stack).
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
            # HTTP worker only (Celery opens services too, and has its own metrics): the
            # pool, memory and readiness gauges, build info, METRICS_EXPOSURE=port's
            # listener; SQL spans when OTEL_ENABLED. Stopped by services.exit_stack.
            await open_metrics(services)
            instrument_engine(services.engine, settings)
            yield {"services": services}

    return lifespan


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
