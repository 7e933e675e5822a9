"""Refuse request bodies sent with a content coding (gzip, deflate, br, ...) with 415.

The app never decompresses a request body. Without this layer a gzip body reached the JSON
parser as raw bytes and came back as a 400 that said nothing about why; refusing it before
anything reads the body names the problem (RFC 9110 §15.5.16) and the one coding accepted
(`Accept-Encoding: identity`, RFC 7694 §3). Since nothing ever inflates a body, a
decompression bomb cannot cost memory either: it is refused like any other gzip body.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from slipway.platform.errors import error_body

#: The only coding accepted: the body as sent is the body the app parses.
IDENTITY = b"identity"


def _codings(value: bytes) -> list[bytes]:
    return [coding.strip().lower() for coding in value.split(b",") if coding.strip()]


class RequestContentEncodingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-encoding" and any(
                    coding != IDENTITY for coding in _codings(value)
                ):
                    await self._reject(send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _reject(send: Send) -> None:
        body = error_body(
            415,
            "unsupported_media_type",
            "Request bodies are accepted uncompressed only (no Content-Encoding).",
            details={"accepted_encodings": ["identity"]},
        )
        await send(
            {
                "type": "http.response.start",
                "status": 415,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # No `Connection: close`: the server discards the unread body and the
                    # client reads this answer (see body_limit.py on resets).
                    (b"accept-encoding", IDENTITY),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
