"""Named strict policies declared by routes:

    @router.post("/login", dependencies=[Depends(RateLimit("login",
                 keys=[client_ip, body_field("username")]))])

Each key is counted separately, so "login" at 5/minute means 5 per IP and 5 per username.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from slipway.platform.errors import AppError, RateLimitedError, ServiceUnavailableError
from slipway.platform.ratelimit.keys import RateLimitKey, client_ip, user_id
from slipway.platform.ratelimit.limiter import RateLimitDecision, RateLimiterService


class DecisionSlot:
    """The tightest decision of one request, filled by the middleware and the route
    dependencies and read back when the response starts (for the RateLimit-* headers)."""

    __slots__ = ("decision",)

    def __init__(self) -> None:
        self.decision: RateLimitDecision | None = None

    def record(self, decision: RateLimitDecision) -> None:
        if decision.tighter_than(self.decision):
            self.decision = decision


# A context variable holding a per-request slot, not scope["state"]: that dict is shared by
# every request under some lifespan runners (asgi-lifespan), and a dependency may see a copy
# of the scope. The middleware sets a fresh slot per request; dependencies only mutate it.
current_decisions: ContextVar[DecisionSlot | None] = ContextVar(
    "rate_limit_decisions", default=None
)


def limiter_from_scope(scope: Scope) -> RateLimiterService | None:
    state = getattr(scope.get("app"), "state", None)
    services: Any = getattr(state, "services", None)
    limiter: RateLimiterService | None = getattr(services, "limiter", None)
    return limiter


def record_decision(decision: RateLimitDecision) -> None:
    slot = current_decisions.get()
    if slot is not None:
        slot.record(decision)


def refusal(decision: RateLimitDecision) -> AppError:
    """The error for a refused decision: 429, or 503 when the storage is down and the
    configured policy is to fail closed."""
    if decision.degraded:
        return ServiceUnavailableError(
            "Rate limiting is temporarily unavailable; retry later.",
            code="rate_limit_unavailable",
            headers=decision.headers(),
        )
    return RateLimitedError(
        details={
            "policy": decision.policy,
            "limit": decision.limit,
            "retry_after": max(1, decision.reset_after),
        },
        headers=decision.headers(),
    )


class RateLimit:
    """Route dependency enforcing the named policy from RATE_LIMIT_POLICIES."""

    def __init__(
        self,
        policy: str,
        *,
        keys: Sequence[RateLimitKey] = (client_ip, user_id),
        cost: int = 1,
    ) -> None:
        self.policy = policy
        self.keys = tuple(keys)
        self.cost = cost

    async def __call__(self, request: Request) -> None:
        limiter = limiter_from_scope(request.scope)
        if limiter is None or not limiter.enabled:
            return
        pairs: list[tuple[str, str]] = []
        for key in self.keys:
            value = await key(request)
            if value is not None:
                pairs.append((key.name, value))
        if not pairs:
            return
        decision = await limiter.hit(self.policy, pairs, self.cost)
        record_decision(decision)
        if not decision.allowed:
            raise refusal(decision)
