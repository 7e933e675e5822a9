"""Keyset (cursor) pagination helpers: opaque, signed cursors and the `Page` schema.

Keyset pages cost the same at any depth (an index seek on `(sort_key, id)`), unlike OFFSET,
and never skip or repeat rows while the table is written to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel

from slipway.platform.errors import ValidationFailedError

T = TypeVar("T")

#: The longest cursor `CursorCodec.decode` reads (every `cursor` query parameter says so).
CURSOR_MAX_LENGTH = 1024


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class InvalidCursorError(ValidationFailedError):
    code = "invalid_cursor"
    message = "The cursor is malformed or does not match this query."


class CursorCodec:
    """Encodes `(context, position)` as an opaque url-safe token with an HMAC, so clients
    cannot forge positions or reuse a cursor with different sort parameters."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:12]

    def encode(self, context: str, position: list[Any]) -> str:
        payload = orjson.dumps([context, position])
        token = self._sign(payload) + payload
        return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")

    def decode(self, context: str, cursor: str) -> list[Any]:
        if len(cursor) > CURSOR_MAX_LENGTH:
            raise InvalidCursorError(details=[{"field": "cursor", "message": "too long"}])
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError(
                details=[{"field": "cursor", "message": "not base64"}]
            ) from exc
        signature, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidCursorError(details=[{"field": "cursor", "message": "bad signature"}])
        try:
            decoded_context, position = orjson.loads(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            raise InvalidCursorError(
                details=[{"field": "cursor", "message": "bad payload"}]
            ) from exc
        if decoded_context != context or not isinstance(position, list):
            raise InvalidCursorError(
                details=[{"field": "cursor", "message": "cursor belongs to another query"}]
            )
        return position


def cursor_codec(secret_key: str) -> CursorCodec:
    # Derive a dedicated key so cursor signatures never double as anything else.
    return CursorCodec(hashlib.sha256(b"slipway-cursor:" + secret_key.encode()).digest())
