"""`services.events`: publish an event once; every instance delivers it to its clients.

With REDIS_URL the event goes through one Redis pub/sub channel that every instance
subscribes to (a client on any instance receives events published on any other, workers
included). Without it, delivery is in-process. Pub/sub is at-most-once: events published
while an instance is disconnected from Redis do not reach its clients.
"""

from __future__ import annotations

import asyncio
import functools
from contextlib import AsyncExitStack

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.websockets import WebSocket

from slipway.platform.db.session import after_commit
from slipway.platform.events.auth import Principal, TokenVerifier
from slipway.platform.events.hub import LocalHub
from slipway.platform.events.models import Event, decode_envelope, encode_envelope
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.events")

#: How long a new connection waits for the first subscription to be confirmed.
SUBSCRIBE_WAIT_SECONDS = 2.0
RECONNECT_MAX_SECONDS = 5.0
POLL_SECONDS = 1.0


class EventBus:
    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.settings = settings
        self.hub = LocalHub(settings)
        self._redis = redis
        self._channel = settings.events_channel
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._publish_failing = False

    @property
    def distributed(self) -> bool:
        return self._redis is not None

    async def publish(self, event: Event) -> None:
        """Deliver `event` to its audience on every instance; never raises for Redis."""
        if self._redis is None:
            self.hub.deliver(event.audience, event.client_message())
            return
        try:
            await self._redis.publish(self._channel, encode_envelope(event))
        except (RedisError, OSError) as error:
            # Degrade to this instance's clients; one warning per outage, not per event.
            if not self._publish_failing:
                log.warning("events_publish_degraded", error=str(error))
            self._publish_failing = True
            self.hub.deliver(event.audience, event.client_message())
            return
        if self._publish_failing:
            log.info("events_publish_recovered")
            self._publish_failing = False

    def publish_after_commit(self, session: AsyncSession, event: Event) -> None:
        """Publish `event` once `session`'s transaction commits (nothing on rollback)."""
        after_commit(session, functools.partial(self.publish, event))

    async def serve(
        self,
        websocket: WebSocket,
        principal: Principal,
        token: str,
        verifier: TokenVerifier | None,
    ) -> None:
        """Serve one authenticated WebSocket until it closes."""
        await self._ensure_listening()
        await self.hub.serve(websocket, principal, token, verifier)

    async def _ensure_listening(self) -> None:
        # Subscribing lazily keeps processes without WebSockets (Celery workers) off the
        # channel; the first connection waits for the confirmation so it misses nothing.
        if self._redis is None:
            return
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="slipway-events-listener")
        try:
            async with asyncio.timeout(SUBSCRIBE_WAIT_SECONDS):
                await self._subscribed.wait()
        except TimeoutError:
            log.warning("events_subscribe_pending")

    async def _listen(self) -> None:
        assert self.settings.redis_url is not None
        # A dedicated connection without a read timeout (a quiet channel is not an error);
        # the health check PINGs it, so a dead link is still noticed.
        client = Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=1.0,
            socket_timeout=None,
            health_check_interval=10,
        )
        delay = 0.1
        try:
            while True:
                try:
                    async with client.pubsub() as pubsub:
                        await pubsub.subscribe(self._channel)
                        while True:
                            message = await pubsub.get_message(timeout=POLL_SECONDS)
                            if message is None:
                                continue
                            if message["type"] == "subscribe":
                                self._subscribed.set()
                                log.info("events_subscribed", channel=self._channel)
                                delay = 0.1
                            elif message["type"] == "message":
                                self._deliver(message["data"])
                except (RedisError, OSError) as error:
                    self._subscribed.clear()
                    log.warning("events_subscription_lost", error=str(error), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_SECONDS)
        finally:
            await client.aclose()

    def _deliver(self, raw: bytes | str) -> None:
        try:
            audience, message = decode_envelope(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("events_bad_envelope")
            return
        self.hub.deliver(audience, message)

    async def aclose(self) -> None:
        await self.hub.close_all()
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)


async def open_events(settings: Settings, redis: Redis | None, stack: AsyncExitStack) -> EventBus:
    bus = EventBus(settings, redis)
    stack.push_async_callback(bus.aclose)
    return bus
