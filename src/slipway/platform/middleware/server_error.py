"""Turn unhandled exceptions into the 500 envelope inside the request-id and header layers.

Starlette's ServerErrorMiddleware sits outside every user middleware, so its 500 would miss
X-Request-ID and the security headers; this layer answers first and logs the traceback.
"""

from __future__ import annotations

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.errors import error_body

log = structlog.get_logger("slipway.errors")


class ServerErrorEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            # The full traceback goes to the log with the request_id; the body leaks nothing.
            log.exception("unhandled_exception", method=scope.get("method"), path=scope["path"])
            if started:
                # Headers are out; the server will abort the connection.
                raise
            body = error_body(500, "internal_error", "An internal error occurred.")
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
