"""One structured line per request: method, route template, status, duration, client.

Never logs Authorization, cookies or bodies. Health and metrics probes are logged only when
they fail, so load-balancer polling does not flood the log.
"""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("slipway.access")

UNMATCHED_ROUTE = "<unmatched>"


def _template_of(route: object) -> str | None:
    path_format = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path_format if isinstance(path_format, str) and path_format else None


def route_template(scope: Scope) -> str:
    """The matched route's template (`/api/v1/products/{product_id}`), never the raw path."""
    template = _template_of(scope.get("route"))
    if template is not None:
        return template
    # FastAPI records `scope["route"]` for its own APIRoutes only; plain Starlette routes
    # (/openapi.json) and mounts (the docs assets) leave just their endpoint behind.
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        for candidate in getattr(scope.get("router"), "routes", ()):
            if getattr(candidate, "endpoint", None) is endpoint or (
                getattr(candidate, "app", None) is endpoint
            ):
                return _template_of(candidate) or UNMATCHED_ROUTE
    return UNMATCHED_ROUTE


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, quiet_prefixes: tuple[str, ...] = ()) -> None:
        # Imported here: metrics.routes builds on this module's fallback resolver.
        from slipway.platform.metrics.routes import RouteTemplates

        self.app = app
        self.quiet_prefixes = quiet_prefixes
        # The full template (/api/v1/products/{product_id}), as the metrics label it.
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start = time.perf_counter()
        status = 500

        async def capture_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture_status)
        finally:
            path: str = scope["path"]
            if status >= 400 or not path.startswith(self.quiet_prefixes):
                self._log(scope, status, start)

    def _log(self, scope: Scope, status: int, start: float) -> None:
        user_agent = ""
        for name, value in scope["headers"]:
            if name == b"user-agent":
                user_agent = value.decode("latin-1")[:256]
                break
        client = scope.get("client")
        log.info(
            "request",
            method=scope["method"],
            route=self.routes.resolve(scope),
            status=status,
            duration_ms=round((time.perf_counter() - start) * 1000, 2),
            client_ip=client[0] if client else None,
            user_agent=user_agent,
        )
