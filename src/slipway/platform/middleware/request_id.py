"""Accept a well-formed incoming X-Request-ID or mint one; echo it; expose it to logs."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.context import request_id_var

HEADER = b"x-request-id"
# Bounded and charset-restricted: the id lands in logs and headers, so it must not carry
# newlines, quotes or megabytes from a hostile client.
_VALID = re.compile(rb"^[A-Za-z0-9._:\-]{8,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == HEADER:
                raw = value
                break
        request_id = raw.decode("ascii") if raw and _VALID.match(raw) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        encoded = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((HEADER, encoded))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
