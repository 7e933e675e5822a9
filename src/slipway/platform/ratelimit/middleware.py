"""The default per-client limit on /api, as pure ASGI middleware (ERRATA: never
BaseHTTPMiddleware), and the RateLimit-* headers of every limited response.

It sits after ProxyHeadersMiddleware (the client IP is the real one) and inside CORS (a 429
still carries the CORS headers a browser needs to read it).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.errors import error_body
from slipway.platform.ratelimit.deps import (
    DecisionSlot,
    current_decisions,
    limiter_from_scope,
    refusal,
)
from slipway.platform.ratelimit.keys import scope_keys
from slipway.platform.ratelimit.limiter import DEFAULT_POLICY, RateLimitDecision

_HEADER_MARK = b"ratelimit-limit"


def _under(path: str, prefixes: Sequence[str]) -> bool:
    for prefix in prefixes:
        base = prefix.rstrip("/")
        if not base or path == base or path.startswith(base + "/"):
            return True
    return False


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, paths: Sequence[str] = ("/api",), exempt: Sequence[str] = ()
    ) -> None:
        self.app = app
        self.paths = tuple(paths)
        self.exempt = tuple(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Exempt paths (health probes, /metrics) skip the limiter's bookkeeping entirely:
        # they are polled constantly and never limited.
        path: str = scope["path"]
        limiter = limiter_from_scope(scope)
        if limiter is None or not limiter.enabled or _under(path, self.exempt):
            await self.app(scope, receive, send)
            return

        slot = DecisionSlot()
        if (
            scope["method"] != "OPTIONS"
            and _under(path, self.paths)
            and not _under(path, self.exempt)
        ):
            decision = await limiter.hit(DEFAULT_POLICY, scope_keys(scope))
            if not decision.allowed:
                await _refuse(decision, send)
                return
            slot.record(decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                decision = slot.decision
                if decision is not None and not decision.degraded:
                    headers = list(message.get("headers", ()))
                    # A 429 raised by a route dependency already carries its own.
                    if all(name.lower() != _HEADER_MARK for name, _ in headers):
                        headers.extend(
                            (name.lower().encode(), value.encode())
                            for name, value in decision.headers().items()
                        )
                        message["headers"] = headers
            await send(message)

        token = current_decisions.set(slot)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_decisions.reset(token)


async def _refuse(decision: RateLimitDecision, send: Send) -> None:
    error = refusal(decision)
    body = error_body(error.status_code, error.code, error.message, error.details)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend(
        (name.lower().encode(), value.encode()) for name, value in (error.headers or {}).items()
    )
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
