"""Platform cache: `CacheService` (lifespan-owned), deterministic keys, tag invalidation."""

from slipway.platform.cache.deps import CacheDep, get_cache
from slipway.platform.cache.keys import CacheKey, CacheTag, KeyPart, cache_key, cache_tag
from slipway.platform.cache.service import CacheResult, CacheService, Loader, open_cache

__all__ = [
    "CacheDep",
    "CacheKey",
    "CacheResult",
    "CacheService",
    "CacheTag",
    "KeyPart",
    "Loader",
    "cache_key",
    "cache_tag",
    "get_cache",
    "open_cache",
]
