"""The rate limiter service: `limits` (async API) over Redis when REDIS_URL is set, so
counters are global across processes and replicas, or over memory in embedded mode.

Every check hits each (key kind, key value) pair of a request against each limit of a
policy; the tightest window is what the client is told in the RateLimit-* headers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.asyncio import Redis

from slipway.platform.cache.outage import OutageTracker
from slipway.platform.metrics import hooks as metrics
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.ratelimit")

#: The policy the middleware applies to every request under RATE_LIMIT_PATHS.
DEFAULT_POLICY = "default"

_STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}

#: One identifier of a request: ("ip", "203.0.113.5"), ("user", "42"), ("username", ...).
KeyPair = tuple[str, str]


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    name: str
    limits: tuple[RateLimitItem, ...]
    text: str

    @classmethod
    def parse(cls, name: str, text: str) -> RateLimitPolicy:
        return cls(name=name, limits=tuple(parse_many(text)), text=text)


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The outcome of one check, and what the client is told about it."""

    policy: str
    allowed: bool
    limit: int = 0
    remaining: int = 0
    #: Seconds until the window frees capacity again (RateLimit-Reset, Retry-After).
    reset_after: int = 0
    #: The storage was unreachable; `allowed` is then the configured fail policy.
    degraded: bool = False

    def headers(self) -> dict[str, str]:
        """RateLimit-Limit/-Remaining/-Reset (plus Retry-After when refused)."""
        if self.degraded:
            return {"Retry-After": str(max(1, self.reset_after))} if not self.allowed else {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_after))
        return headers

    def tighter_than(self, other: RateLimitDecision | None) -> bool:
        """Whether this decision is the one to report instead of `other`."""
        if other is None:
            return True
        if self.allowed != other.allowed:
            return not self.allowed
        if self.degraded != other.degraded:
            # Real counts beat a fail-policy guess.
            return not self.degraded
        return (self.remaining, -self.reset_after) < (other.remaining, -other.reset_after)


class RateLimiterService:
    def __init__(
        self,
        storage: Storage,
        *,
        strategy: str,
        policies: Mapping[str, str],
        default: str,
        distributed: bool,
        enabled: bool = True,
        fail_open: bool = True,
        retry_seconds: float = 1.0,
    ) -> None:
        self.storage = storage
        self._strategy = _STRATEGIES[strategy](storage)
        self.policies: dict[str, RateLimitPolicy] = {
            name: RateLimitPolicy.parse(name, text) for name, text in policies.items()
        }
        self.policies[DEFAULT_POLICY] = RateLimitPolicy.parse(DEFAULT_POLICY, default)
        self.distributed = distributed
        self.enabled = enabled
        self.fail_open = fail_open
        self._outage = OutageTracker("ratelimit", log, retry_seconds=retry_seconds)
        self._counts = dict.fromkeys(("allowed", "limited", "failed_open", "failed_closed"), 0)

    def policy(self, name: str) -> RateLimitPolicy:
        try:
            return self.policies[name]
        except KeyError:
            raise LookupError(
                f"unknown rate-limit policy {name!r}; add it to RATE_LIMIT_POLICIES"
            ) from None

    async def hit(
        self, policy_name: str, keys: Sequence[KeyPair], cost: int = 1
    ) -> RateLimitDecision:
        """Count one request against `policy_name` for each key; refuse if any is over."""
        policy = self.policy(policy_name)
        if not self.enabled or not keys:
            return RateLimitDecision(policy=policy.name, allowed=True, degraded=True)
        if not self._outage.should_try():
            return self._degraded(policy)
        try:
            decision = await self._hit(policy, keys, cost)
        except Exception as error:
            # Broad on purpose: whatever the storage raises, the configured fail policy
            # decides, never a 500.
            self._outage.failure(error)
            return self._degraded(policy)
        self._outage.success()
        self._counts["allowed" if decision.allowed else "limited"] += 1
        if not decision.allowed:
            metrics.record_rate_limited(policy.name)
        return decision

    async def _hit(
        self, policy: RateLimitPolicy, keys: Sequence[KeyPair], cost: int
    ) -> RateLimitDecision:
        tightest: RateLimitDecision | None = None
        for kind, value in keys:
            for item in policy.limits:
                identifiers = (policy.name, kind, value)
                allowed = await self._strategy.hit(item, *identifiers, cost=cost)
                stats = await self._strategy.get_window_stats(item, *identifiers)
                decision = RateLimitDecision(
                    policy=policy.name,
                    allowed=allowed,
                    limit=item.amount,
                    remaining=max(0, stats.remaining),
                    reset_after=max(0, math.ceil(stats.reset_time - time.time())),
                )
                if decision.tighter_than(tightest):
                    tightest = decision
                if not allowed:
                    # Stop counting once refused: the other keys are not charged for it.
                    return decision
        assert tightest is not None
        return tightest

    def _degraded(self, policy: RateLimitPolicy) -> RateLimitDecision:
        self._counts["failed_open" if self.fail_open else "failed_closed"] += 1
        return RateLimitDecision(
            policy=policy.name,
            allowed=self.fail_open,
            degraded=True,
            reset_after=max(1, math.ceil(self._outage.retry_seconds)),
        )

    async def reset(self) -> None:
        """Forget every counter (tests and operators; Redis keys under our prefix only)."""
        await self.storage.reset()

    def stats(self) -> dict[str, int]:
        """Counters for metrics: allowed, limited, failed_open, failed_closed, errors,
        outages, available."""
        return {
            **self._counts,
            "errors": self._outage.failures,
            "outages": self._outage.outages,
            "available": int(not self._outage.down),
        }


def create_storage(settings: Settings, redis: Redis | None) -> Storage:
    if redis is None:
        return MemoryStorage()
    tls = bool(settings.redis_url and settings.redis_url.startswith("rediss"))
    scheme = "async+rediss" if tls else "async+redis"
    # Share the app's redis-py pool (short timeouts, closed by the lifespan) instead of a
    # second client library (coredis is limits' default).
    return RedisStorage(
        f"{scheme}://",
        implementation="redispy",
        connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        key_prefix=settings.rate_limit_key_prefix,
        wrap_exceptions=True,
    )


async def open_limiter(
    settings: Settings, redis: Redis | None, exit_stack: AsyncExitStack
) -> RateLimiterService:
    """Create the limiter for the lifespan (Redis when available, memory otherwise)."""
    storage = create_storage(settings, redis)
    service = RateLimiterService(
        storage,
        strategy=settings.rate_limit_strategy,
        policies=settings.rate_limit_policies,
        default=settings.rate_limit_default,
        distributed=redis is not None,
        enabled=settings.rate_limit_enabled,
        fail_open=settings.rate_limit_fail_open,
        retry_seconds=settings.rate_limit_retry_seconds,
    )
    if isinstance(storage, MemoryStorage):
        exit_stack.callback(_stop_memory_timer, storage)
    log.info(
        "ratelimit_opened",
        backend="redis" if service.distributed else "memory",
        strategy=settings.rate_limit_strategy,
        fail_open=settings.rate_limit_fail_open,
    )
    return service


def _stop_memory_timer(storage: MemoryStorage) -> None:
    # MemoryStorage expires entries from a background task; do not leave it pending.
    if storage.timer is not None and not storage.timer.done():
        storage.timer.cancel()
