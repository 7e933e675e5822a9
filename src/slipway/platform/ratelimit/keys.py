"""What a request is counted by: client IP (already resolved from trusted proxy headers by
ProxyHeadersMiddleware, FORWARDED_ALLOW_IPS), user id when authenticated, or a field of the
body (the login name)."""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.types import Scope

#: Where the identity layer puts the authenticated user's id: `request.state.user_id = ...`
#: (a middleware, or a dependency that runs before `RateLimit`).
USER_ID_STATE_KEY = "user_id"
UNKNOWN_CLIENT = "unknown"
_MAX_FIELD_LENGTH = 320  # longer than any valid e-mail address


class RateLimitKey(Protocol):
    """A named extractor; None means "does not apply to this request" (no counter)."""

    name: str

    async def __call__(self, request: Request) -> str | None: ...


def _state(scope: Scope) -> MutableMapping[str, Any]:
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    return state


def client_ip_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else UNKNOWN_CLIENT


def current_user_id(scope: Scope) -> str | None:
    """The authenticated user's id, when the identity layer has set one."""
    value = _state(scope).get(USER_ID_STATE_KEY)
    return None if value is None else str(value)


def scope_keys(scope: Scope) -> list[tuple[str, str]]:
    """Keys of the default policy: the IP, and the user too when authenticated."""
    keys = [("ip", client_ip_of(scope))]
    user = current_user_id(scope)
    if user is not None:
        keys.append(("user", user))
    return keys


class _ClientIp:
    name = "ip"

    async def __call__(self, request: Request) -> str | None:
        return client_ip_of(request.scope)


class _UserId:
    name = "user"

    async def __call__(self, request: Request) -> str | None:
        return current_user_id(request.scope)


class BodyField:
    """A field of the JSON or form body, normalised (case, spaces) and hashed.

    Hashed so Redis and its monitoring never hold user names or e-mail addresses in clear;
    normalised so "Alice" and " alice" share one budget.
    """

    def __init__(self, field: str, name: str | None = None) -> None:
        self.field = field
        self.name = name or field

    async def __call__(self, request: Request) -> str | None:
        raw: Any = None
        content_type = request.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                body = await request.json()
                raw = body.get(self.field) if isinstance(body, dict) else None
            elif content_type.startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                raw = (await request.form()).get(self.field)
        except ValueError:  # malformed body: the route answers 422, the IP key still counts
            return None
        if not isinstance(raw, str) or not raw.strip():
            return None
        normalised = raw.strip().casefold()[:_MAX_FIELD_LENGTH]
        return hashlib.blake2b(normalised.encode(), digest_size=12).hexdigest()


client_ip: RateLimitKey = _ClientIp()
user_id: RateLimitKey = _UserId()


def body_field(field: str, name: str | None = None) -> RateLimitKey:
    """Count by a body field: `RateLimit("login", keys=[client_ip, body_field("username")])`."""
    return BodyField(field, name)
