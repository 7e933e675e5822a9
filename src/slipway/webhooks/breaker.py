"""One circuit breaker per webhook endpoint (purgatory).

Why purgatory: it is asyncio-native (a delivery never blocks the event loop on breaker
bookkeeping) and keeps breaker state behind a storage interface with a Redis
implementation, so every web process and Celery worker shares one state per endpoint:
five failures seen by five different workers open the circuit for all of them. pybreaker's
Redis storage is synchronous, and aiobreaker has had no release since 2021 and keeps state
in the process only.

- With Redis (REDIS_URL): state lives under `<CACHE_PREFIX>:webhooks:breaker:` and is
  shared by every process. Purgatory's Redis repository is reused as is, given the app's
  own client (short timeouts, one pool) instead of opening a second connection pool.
- Without Redis (embedded mode, one process): in memory, per process.

States (purgatory's names): "closed" (deliver, count consecutive failures), "opened"
(after WEBHOOK_BREAKER_THRESHOLD failures: refuse without calling the receiver), then,
WEBHOOK_BREAKER_RESET_SECONDS later, "half-opened": the next delivery goes through; its
success closes the circuit, its failure opens it again at once.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from purgatory import AsyncCircuitBreakerFactory, AsyncInMemoryUnitOfWork
from purgatory.domain.model import OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from purgatory.service._async.repository import AsyncRedisRepository
from purgatory.service._async.unit_of_work import AsyncAbstractUnitOfWork
from redis.asyncio import Redis

from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

#: Raised on entering an open circuit (purgatory's own exception type).
CircuitOpenError = OpenedState


class _SharedRedisRepository(AsyncRedisRepository):
    def __init__(self, redis: Redis, prefix: str) -> None:
        # Deliberately not calling super().__init__: it would open its own client.
        self.redis = redis
        self.messages = []
        self.prefix = prefix


class _SharedRedisUnitOfWork(AsyncAbstractUnitOfWork):
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.contexts = _SharedRedisRepository(redis, prefix)

    async def commit(self) -> None:
        """Every repository write is a single Redis command; nothing to commit."""

    async def rollback(self) -> None:
        """Nothing to roll back."""


def circuit_name(endpoint_id: uuid.UUID) -> str:
    return f"endpoint:{endpoint_id}"


class EndpointBreakers:
    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        uow: AsyncAbstractUnitOfWork
        if redis is not None:
            prefix = f"{settings.cache_prefix}:webhooks:breaker:"
            uow = _SharedRedisUnitOfWork(redis, prefix)
            self.storage = "redis"
        else:
            uow = AsyncInMemoryUnitOfWork()
            self.storage = "memory"
        self._uow = uow
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=settings.webhook_breaker_threshold,
            default_ttl=settings.webhook_breaker_reset_seconds,
            uow=uow,
        )

    async def breaker(self, endpoint_id: uuid.UUID) -> AsyncCircuitBreaker:
        """`async with` it around one delivery; entering raises CircuitOpenError when open."""
        return await self._factory.get_breaker(circuit_name(endpoint_id))

    async def state(self, endpoint_id: uuid.UUID) -> str:
        """ "closed", "opened" or "half-opened" (an endpoint never delivered to is closed)."""
        context = await self._uow.contexts.get(circuit_name(endpoint_id))
        return "closed" if context is None else context.state

    async def forget(self, endpoint_id: uuid.UUID) -> None:
        """Drop a deleted endpoint's state."""
        name = circuit_name(endpoint_id)
        contexts = self._uow.contexts
        if isinstance(contexts, _SharedRedisRepository):
            await contexts.redis.delete(
                f"{contexts.prefix}{name}", f"{contexts.prefix}{name}::failure_count"
            )
        else:
            breakers = getattr(contexts, "breakers", {})
            breakers.pop(name, None)


#: One EndpointBreakers per open Services container (a web process, a Celery child): the
#: memory storage must outlive single deliveries. Entries leave with their container.
_BY_SERVICES: dict[int, EndpointBreakers] = {}


def breakers_for(services: Services) -> EndpointBreakers:
    key = id(services)
    found = _BY_SERVICES.get(key)
    if found is None:
        found = _BY_SERVICES[key] = EndpointBreakers(services.settings, services.redis)
        services.exit_stack.callback(_BY_SERVICES.pop, key, None)
    return found
