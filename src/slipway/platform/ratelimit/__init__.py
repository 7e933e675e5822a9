"""Platform rate limiting: `limits` over Redis (global) or memory (embedded)."""

from slipway.platform.ratelimit.deps import RateLimit, limiter_from_scope
from slipway.platform.ratelimit.keys import (
    USER_ID_STATE_KEY,
    RateLimitKey,
    body_field,
    client_ip,
    current_user_id,
    user_id,
)
from slipway.platform.ratelimit.limiter import (
    DEFAULT_POLICY,
    RateLimitDecision,
    RateLimiterService,
    RateLimitPolicy,
    open_limiter,
)
from slipway.platform.ratelimit.middleware import RateLimitMiddleware

__all__ = [
    "DEFAULT_POLICY",
    "USER_ID_STATE_KEY",
    "RateLimit",
    "RateLimitDecision",
    "RateLimitKey",
    "RateLimitMiddleware",
    "RateLimitPolicy",
    "RateLimiterService",
    "body_field",
    "client_ip",
    "current_user_id",
    "limiter_from_scope",
    "open_limiter",
    "user_id",
]
