"""The login slow-down never reads a pending wait as over."""

from __future__ import annotations

from cashews import Cache

from slipway.identity.throttle import LoginThrottle
from tests.conftest import make_settings


async def test_a_wait_in_its_last_half_second_still_counts() -> None:
    cache = Cache()
    cache.setup("mem://")
    throttle = LoginThrottle(cache, make_settings())
    _, wait_key = throttle._keys("ada@example.com")
    # TTLs are rounded to whole seconds: 0.3 s left reads as 0.
    await cache.set(wait_key, 1, expire=0.3)

    assert await throttle.retry_after("ada@example.com") == 1
    assert await throttle.retry_after("nobody@example.com") == 0
