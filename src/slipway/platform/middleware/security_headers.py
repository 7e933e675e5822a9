"""Security headers on every HTTP response, added by wrapping `send` (ERRATA: the 003
sample treats the awaited app call as a response object, which is broken)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# OWASP: X-XSS-Protection is obsolete and can introduce XSS; send 0 rather than "1; mode=block".
_BASE: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-xss-protection", b"0"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
)
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The docs pages load their own scripts and styles from this origin (never a CDN).
_DOCS_CSP = (
    b"content-security-policy",
    b"; ".join(
        (
            b"default-src 'none'",
            b"script-src 'self' 'unsafe-inline'",
            b"style-src 'self' 'unsafe-inline'",
            b"img-src 'self' data:",
            b"connect-src 'self'",
            b"font-src 'self' data:",
            b"worker-src 'self' blob:",
            b"frame-ancestors 'none'",
        )
    ),
)
_NO_STORE = (b"cache-control", b"no-store")


class SecurityHeadersMiddleware:
    def __init__(
        self, app: ASGIApp, *, hsts_seconds: int = 0, docs_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.hsts = (
            (b"strict-transport-security", f"max-age={hsts_seconds}; includeSubDomains".encode())
            if hsts_seconds
            else None
        )
        self.docs_prefixes = docs_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        path: str = scope["path"]
        is_docs = bool(self.docs_prefixes) and path.startswith(self.docs_prefixes)
        add: list[tuple[bytes, bytes]] = [*_BASE, _DOCS_CSP if is_docs else _API_CSP]
        # HSTS only means something over HTTPS (scheme comes from trusted proxy headers).
        if self.hsts is not None and scope.get("scheme") == "https":
            add.append(self.hsts)
        authenticated = any(name in (b"authorization", b"cookie") for name, _ in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in add if h[0] not in present)
                # Authenticated responses must never sit in a shared cache.
                if authenticated and b"cache-control" not in present:
                    headers.append(_NO_STORE)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
