"""The cache service: cashews underneath (Redis when REDIS_URL is set, in-process memory
otherwise), owned by the lifespan, with the same semantics in both modes.

- Values are bytes (serialised response schemas), stored without pickle: a pickled value
  read back from a shared Redis is code execution for whoever can write to that Redis.
- `get_or_load` is stampede-proof: one load per key at a time in this process
  (single-flight) and across processes (a cashews lock in Redis).
- A failing Redis never fails a request: the value comes from the loader, one warning is
  logged per outage and the counters in `stats()` move.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import NamedTuple, TypeVar

import structlog
from cashews import Cache

from slipway.platform.cache.keys import CacheKey, KeyPart, cache_key
from slipway.platform.cache.outage import OutageTracker
from slipway.platform.metrics import hooks as metrics
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.cache")

Loader = Callable[[], Awaitable[bytes]]
T = TypeVar("T")

#: How often callers waiting on another process's load look for the value.
LOCK_POLL_SECONDS = 0.05
#: Tag members are popped and deleted in batches of this size.
TAG_BATCH = 500


class CacheResult(NamedTuple):
    value: bytes
    #: True when this call did not run the loader (stored value, or another caller's load).
    hit: bool


class _BackendDownError(Exception):
    """Internal: the backend failed; the caller falls back to the loader."""


class CacheService:
    def __init__(
        self,
        backend: Cache,
        *,
        namespace: str,
        distributed: bool,
        enabled: bool = True,
        default_ttl: int = 60,
        max_ttl: int = 86_400,
        lock_ttl: int = 10,
        lock_wait: float = 5.0,
        retry_seconds: float = 1.0,
    ) -> None:
        self._backend = backend
        self.namespace = namespace
        #: Redis (shared by every process) or in-process memory.
        self.distributed = distributed
        self.enabled = enabled
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._lock_ttl = lock_ttl
        self._lock_wait = lock_wait
        self._outage = OutageTracker("cache", log, retry_seconds=retry_seconds)
        self._inflight: dict[str, asyncio.Task[CacheResult]] = {}
        self._counts = dict.fromkeys(
            (
                "hits",
                "misses",
                "loads",
                "coalesced",
                "bypassed",
                "lock_timeouts",
                "invalidations",
                "invalidation_failures",
            ),
            0,
        )

    # --- keys -----------------------------------------------------------------------------

    def key(self, *parts: KeyPart, params: Mapping[str, KeyPart | None] | None = None) -> CacheKey:
        """`cache.key("product", 42)`: the same as `cache_key(...)`, for callers holding the
        service."""
        return cache_key(*parts, params=params)

    def full_key(self, key: CacheKey) -> str:
        """The key as stored: `slipway:v1:product:42`."""
        return f"{self.namespace}:{key}"

    def _tag_key(self, tag: str) -> str:
        return f"{self.namespace}:tag:{tag}"

    def _lock_key(self, full_key: str) -> str:
        return f"{self.namespace}:lock:{full_key.removeprefix(self.namespace + ':')}"

    def _ttl(self, ttl: int | None) -> int:
        if ttl is not None and ttl < 1:
            # cashews stores expire=0 as "no expiry": refuse instead of caching forever.
            raise ValueError(f"cache TTL must be at least 1 second, not {ttl}")
        return min(ttl if ttl is not None else self.default_ttl, self.max_ttl)

    # --- public API -----------------------------------------------------------------------

    async def get_or_load(
        self,
        key: CacheKey,
        loader: Loader,
        ttl: int | None = None,
        tags: Sequence[str] = (),
    ) -> CacheResult:
        """The cached bytes for `key`, or the loader's bytes stored for `ttl` seconds."""
        ttl_seconds = self._ttl(ttl)
        if not self.enabled:
            return CacheResult(await self._run_loader(loader), hit=False)
        full = self.full_key(key)
        running = self._inflight.get(full)
        if running is not None:
            self._counts["coalesced"] += 1
            metrics.record_cache(hit=True, namespace=key.partition(":")[0])
            # shield: a caller that gives up (client disconnect) must not cancel the load
            # the other callers are waiting for.
            return CacheResult((await asyncio.shield(running)).value, hit=True)
        task = asyncio.create_task(self._get_or_load(full, loader, ttl_seconds, tags))
        self._inflight[full] = task
        task.add_done_callback(lambda done: self._forget(full, done))
        result = await asyncio.shield(task)
        metrics.record_cache(hit=result.hit, namespace=key.partition(":")[0])
        return result

    async def get(self, key: CacheKey) -> bytes | None:
        """The stored bytes, or None on a miss or while the backend is down."""
        if not self.enabled or not self._outage.should_try():
            return None
        try:
            return await self._get(self.full_key(key))
        except _BackendDownError:
            return None

    async def set(
        self, key: CacheKey, value: bytes, ttl: int | None = None, tags: Sequence[str] = ()
    ) -> bool:
        """Store `value`; False when the cache is off or the backend is down."""
        _require_bytes(value)
        if not self.enabled or not self._outage.should_try():
            return False
        try:
            await self._store(self.full_key(key), value, self._ttl(ttl), tags)
        except _BackendDownError:
            return False
        return True

    async def invalidate(self, *keys: CacheKey) -> bool:
        """Delete entries by key, for every process. False when the backend was unreachable
        (the entries then expire with their TTL)."""
        if not keys:
            return True
        try:
            await self._call(self._backend.delete_many(*(self.full_key(k) for k in keys)))
        except _BackendDownError:
            self._counts["invalidation_failures"] += 1
            return False
        self._counts["invalidations"] += len(keys)
        return True

    async def invalidate_tag(self, *tags: str) -> bool:
        """Delete every entry stored with any of `tags`, for every process."""
        try:
            for tag in tags:
                tag_key = self._tag_key(tag)
                while True:
                    members = list(await self._call(self._backend.set_pop(tag_key, TAG_BATCH)))
                    if members:
                        await self._call(self._backend.delete_many(*members))
                        self._counts["invalidations"] += len(members)
                    if len(members) < TAG_BATCH:
                        break
        except _BackendDownError:
            self._counts["invalidation_failures"] += 1
            return False
        return True

    async def ping(self) -> bool:
        try:
            await self._call(self._backend.ping())
        except _BackendDownError:
            return False
        return True

    def stats(self) -> dict[str, int]:
        """Counters for metrics: hits, misses, loads, coalesced, bypassed (backend down),
        lock_timeouts, invalidations, invalidation_failures, errors, outages, available."""
        return {
            **self._counts,
            "errors": self._outage.failures,
            "outages": self._outage.outages,
            "available": int(not self._outage.down),
        }

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        with warnings.catch_warnings():
            # cashews 7.x closes its client with redis-py's deprecated `close()`; the
            # connections are still released (it disconnects the pool right after).
            warnings.filterwarnings("ignore", r"Call to deprecated close", DeprecationWarning)
            await self._backend.close()

    # --- internals ------------------------------------------------------------------------

    def _forget(self, full: str, task: asyncio.Task[CacheResult]) -> None:
        if self._inflight.get(full) is task:
            del self._inflight[full]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter already got it re-raised

    async def _run_loader(self, loader: Loader) -> bytes:
        value = await loader()
        self._counts["loads"] += 1
        return _require_bytes(value)

    async def _call(self, operation: Awaitable[T]) -> T:
        """Run one backend operation; any failure marks the outage and raises _BackendDownError.

        Broad on purpose: whatever the backend raises (connection refused, timeout, a
        protocol error), a cache problem must never become a 5xx.
        """
        try:
            result = await operation
        except Exception as error:
            self._outage.failure(error)
            metrics.record_cache_error()
            raise _BackendDownError from error
        self._outage.success()
        return result

    async def _get(self, full: str) -> bytes | None:
        value = await self._call(self._backend.get(full))
        return value if isinstance(value, bytes) else None

    async def _store(self, full: str, value: bytes, ttl: int, tags: Sequence[str]) -> None:
        await self._call(self._backend.set(full, value, expire=ttl))
        # The value first, then its tags: an invalidation racing with this store still finds
        # the key in the tag set afterwards. Tag sets live max_ttl, longer than any member.
        for tag in tags:
            await self._call(self._backend.set_add(self._tag_key(tag), full, expire=self.max_ttl))

    async def _get_or_load(
        self, full: str, loader: Loader, ttl: int, tags: Sequence[str]
    ) -> CacheResult:
        if not self._outage.should_try():
            self._counts["bypassed"] += 1
            return CacheResult(await self._run_loader(loader), hit=False)
        try:
            cached = await self._get(full)
        except _BackendDownError:
            self._counts["bypassed"] += 1
            return CacheResult(await self._run_loader(loader), hit=False)
        if cached is not None:
            self._counts["hits"] += 1
            return CacheResult(cached, hit=True)
        self._counts["misses"] += 1
        return await self._load_locked(full, loader, ttl, tags)

    async def _load_locked(
        self, full: str, loader: Loader, ttl: int, tags: Sequence[str]
    ) -> CacheResult:
        """Load under the cross-process lock; others poll for the value meanwhile."""
        lock_key = self._lock_key(full)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._lock_wait
        try:
            while True:
                if await self._call(self._backend.set_lock(lock_key, token, self._lock_ttl)):
                    try:
                        # The previous holder may have stored it between our GET and SET NX.
                        cached = await self._get(full)
                        if cached is not None:
                            return CacheResult(cached, hit=True)
                        return await self._load_and_store(full, loader, ttl, tags)
                    finally:
                        with contextlib.suppress(_BackendDownError):
                            await self._call(self._backend.unlock(lock_key, token))
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(LOCK_POLL_SECONDS)
                cached = await self._get(full)
                if cached is not None:
                    return CacheResult(cached, hit=True)
        except _BackendDownError:
            self._counts["bypassed"] += 1
            return CacheResult(await self._run_loader(loader), hit=False)
        # The holder is slow or died holding the lock: serve rather than wait longer.
        self._counts["lock_timeouts"] += 1
        return await self._load_and_store(full, loader, ttl, tags)

    async def _load_and_store(
        self, full: str, loader: Loader, ttl: int, tags: Sequence[str]
    ) -> CacheResult:
        value = await self._run_loader(loader)
        with contextlib.suppress(_BackendDownError):
            await self._store(full, value, ttl, tags)
        return CacheResult(value, hit=False)


def _require_bytes(value: object) -> bytes:
    if not isinstance(value, bytes):
        # ERRATA: never ORM objects or other live values; serialise the response schema.
        raise TypeError(f"cache values must be bytes (orjson/model_dump_json), not {type(value)!r}")
    return value


def namespace_for(settings: Settings) -> str:
    return f"{settings.cache_prefix}:{settings.cache_schema_version}"


def create_backend(settings: Settings) -> Cache:
    """A private cashews `Cache` (never the module-level global) for these settings."""
    backend = Cache(name="slipway")
    if settings.redis_url:
        backend.setup(
            settings.redis_url,
            # Errors must reach us (cashews would log and return None on every request).
            suppress=False,
            # Raw bytes, never pickle (see the module docstring).
            pickle_type="null",
            client_name="slipway-cache",
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            max_connections=settings.cache_redis_max_connections,
            wait_for_connection_timeout=1.0,
        )
    else:
        backend.setup(
            "mem://", size=settings.cache_memory_size, check_interval=1, pickle_type="null"
        )
    return backend


async def open_cache(settings: Settings, exit_stack: AsyncExitStack) -> CacheService:
    """Create the cache for the lifespan; it is closed when `exit_stack` unwinds."""
    backend = create_backend(settings)
    await backend.init()  # connections are lazy: a Redis that is down does not block startup
    service = CacheService(
        backend,
        namespace=namespace_for(settings),
        distributed=settings.redis_url is not None,
        enabled=settings.cache_enabled,
        default_ttl=settings.cache_default_ttl,
        max_ttl=settings.cache_max_ttl,
        lock_ttl=settings.cache_lock_ttl,
        lock_wait=settings.cache_lock_wait,
        retry_seconds=settings.cache_retry_seconds,
    )
    exit_stack.push_async_callback(service.close)
    log.info("cache_opened", backend="redis" if service.distributed else "memory")
    return service
