"""Reject request bodies above `max_body_size` with 413, chunked bodies included.

A 413 sent before the body is read must not be followed by closing the connection at once:
the client (or Nginx, which forwards a buffered body of up to 2 MiB) is still sending, and
closing a socket with unread data makes the kernel send a reset that can destroy the 413
before the client reads it (Nginx then answers 502/503, httpx raises ReadError; measured by
tests/reliability/test_malformed_input.py). So the connection stays open and the server
reads and discards the rest of the body (uvicorn parses it without buffering once the
response is complete), the "lingering close" Nginx and Apache do. Only a body declared far
beyond the limit, which nobody legitimate sends, is cut off with `Connection: close`.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.errors import error_body

#: Bodies declared up to this many times the limit are read and discarded after the 413
#: (so the client sees it); larger ones are cut off.
LINGER_FACTOR = 8


class BodyTooLargeError(HTTPException):
    """Raised from `receive`; FastAPI re-raises HTTPException from body parsing."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes.")


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_size: int) -> None:
        self.app = app
        self.max_body_size = max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        limit = self.max_body_size
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit or declared < 0:
                    await self._reject(
                        send,
                        limit,
                        status=413 if declared > limit else 400,
                        # An unparseable length leaves no way to find the next request.
                        close=declared < 0 or declared > limit * LINGER_FACTOR,
                    )
                    return
                break

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                # Chunked uploads carry no Content-Length: count what actually arrives.
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    async def _reject(send: Send, limit: int, *, status: int, close: bool) -> None:
        if status == 413:
            body = error_body(
                413, "payload_too_large", f"The request body exceeds the limit of {limit} bytes."
            )
        else:
            body = error_body(400, "bad_request", "Invalid Content-Length header.")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
