"""Progressive slow-down of password guessing against one account.

Separate from the per-IP / per-username rate limits: after `login_slowdown_after_failures`
consecutive failures, every further attempt on that e-mail must wait, doubling up to
`login_slowdown_max_seconds`. Attempts made while waiting are refused without being
counted, and the failure count expires `login_failure_window_seconds` after the last
failure, so the owner is never locked out for good. Keys are digests of the normalised
e-mail, so unknown addresses are throttled exactly like real ones (no enumeration).
"""

from __future__ import annotations

import hashlib

import structlog
from cashews import Cache

from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.identity.throttle")


class LoginThrottle:
    def __init__(self, cache: Cache, settings: Settings) -> None:
        self._cache = cache
        self._prefix = f"{settings.cache_prefix}:identity:login"
        self._threshold = settings.login_slowdown_after_failures
        self._max_delay = settings.login_slowdown_max_seconds
        self._window = settings.login_failure_window_seconds

    def _keys(self, email: str) -> tuple[str, str]:
        digest = hashlib.sha256(email.encode("utf-8")).hexdigest()[:32]
        return f"{self._prefix}:failures:{digest}", f"{self._prefix}:wait:{digest}"

    def delay_after(self, failures: int) -> int:
        """Seconds to wait after `failures` consecutive failures (0 below the threshold)."""
        if failures < self._threshold:
            return 0
        return int(min(self._max_delay, 2 ** (failures - self._threshold)))

    async def retry_after(self, email: str) -> int:
        """Seconds until this account may be tried again (0: now)."""
        _, wait_key = self._keys(email)
        try:
            remaining = await self._cache.get_expire(wait_key)
        except Exception:
            # Throttle storage down: the per-IP/username rate limits still apply.
            log.warning("login_throttle_unavailable", exc_info=True)
            return 0
        if remaining > 0:
            return remaining
        # TTLs are rounded to whole seconds, so 0 is ambiguous: a wait in its last half
        # second (still pending) or, in the memory backend, one that just lapsed. `get`
        # honours the exact expiry in both backends.
        try:
            pending = await self._cache.get(wait_key)
        except Exception:
            return 0
        return 1 if pending is not None else 0

    async def record_failure(self, email: str) -> None:
        failures_key, wait_key = self._keys(email)
        try:
            failures = await self._cache.incr(failures_key)
            # Re-arm the window on every failure (memory `incr` only sets it on the first).
            await self._cache.expire(failures_key, self._window)
            delay = self.delay_after(failures)
            if delay:
                await self._cache.set(wait_key, 1, expire=delay)
        except Exception:
            log.warning("login_throttle_unavailable", exc_info=True)

    async def reset(self, email: str) -> None:
        failures_key, wait_key = self._keys(email)
        try:
            await self._cache.delete(failures_key)
            await self._cache.delete(wait_key)
        except Exception:
            log.warning("login_throttle_unavailable", exc_info=True)
