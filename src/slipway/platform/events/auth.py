"""Who is on the other end: the token-verifier hook shared by the WebSocket endpoint and
the jobs API.

The identity area owns tokens. At startup it installs its verifier:

    install_token_verifier(app, runtime.verify_access_token)

A verifier takes the raw token and returns a principal (anything with `user_id` and
`is_staff`) or None; it never raises for a bad token. Tests install their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

#: The WebSocket subprotocol clients offer (and the server echoes back).
EVENTS_SUBPROTOCOL = "slipway.events.v1"
#: A second offered subprotocol `slipway.bearer.<token>` carries the token in the
#: handshake headers, for clients that cannot send a first message in time.
BEARER_SUBPROTOCOL_PREFIX = "slipway.bearer."
_STATE_KEY = "token_verifier"


class Principal(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...

    @property
    def is_staff(self) -> bool: ...


TokenVerifier = Callable[[str], Awaitable[Principal | None]]


def install_token_verifier(app: Any, verifier: TokenVerifier) -> None:
    """Plug the token verifier into a FastAPI/Starlette app (its `state`)."""
    setattr(app.state, _STATE_KEY, verifier)


def get_token_verifier(app: Any) -> TokenVerifier | None:
    verifier: TokenVerifier | None = getattr(app.state, _STATE_KEY, None)
    return verifier


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def subprotocol_token(offered: Sequence[str]) -> str | None:
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            token = protocol[len(BEARER_SUBPROTOCOL_PREFIX) :]
            return token or None
    return None
