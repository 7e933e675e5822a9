"""RED metrics for every HTTP request, as pure ASGI (never BaseHTTPMiddleware).

Labelled by route template (`/api/v1/products/{product_id}`), never the raw path (ERRATA:
raw paths make one series per id). Requests no route matched share `<unmatched>`, and
methods outside the standard set share `OTHER`, so a client cannot create series.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.metrics import instruments as m
from slipway.platform.metrics.routes import RouteTemplates

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Label children memoised per label tuple: `.labels()` takes a lock and validates
        # its arguments on every call, which is most of the per-request cost otherwise.
        # Bounded by routes x methods x status codes.
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        start = perf_counter()
        # Stays 500 when the app raises before answering (the server then sends a 500).
        status = 500

        async def capture_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = m.IN_FLIGHT
        in_flight.value += 1
        try:
            await self.app(scope, receive, capture_status)
        finally:
            in_flight.value -= 1
            self._observe(scope, status, perf_counter() - start)

    def _observe(self, scope: Scope, status: int, elapsed: float) -> None:
        method: str = scope["method"]
        if method not in _METHODS:
            method = "OTHER"
        route = self._routes.resolve(scope)
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = m.HTTP_REQUESTS.labels(method, route, str(status))
            self._counters[(method, route, status)] = counter
        counter.inc()
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = m.HTTP_DURATION.labels(method, route)
            self._histograms[(method, route)] = histogram
        histogram.observe(elapsed)
