"""Redirect plain HTTP to HTTPS (HTTPS_REDIRECT=true), except health probes.

Kubelets, Docker HEALTHCHECKs and load balancers probe containers over plain HTTP on the
pod network; redirecting them would turn every probe into a failure.
"""

from __future__ import annotations

from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class HTTPSRedirectExceptHealthMiddleware(HTTPSRedirectMiddleware):
    def __init__(self, app: ASGIApp, *, exempt_prefixes: tuple[str, ...] = ("/health",)) -> None:
        super().__init__(app)
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(
            self.exempt_prefixes
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
