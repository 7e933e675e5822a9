"""`GET /ws/events`: the realtime channel.

Authentication never puts the token in the URL (URLs end up in access logs):

- either the first message: `{"type": "auth", "token": "<access token>"}`,
- or the handshake: offer the subprotocols `slipway.events.v1` and
  `slipway.bearer.<access token>`; the server answers with `slipway.events.v1`.

A missing, late or invalid token closes the socket with 4401. Then the server sends
`{"type": "ready"}`, the events addressed to the user (or to staff), and a heartbeat when
idle; a client may send `{"type": "ping"}` and gets a pong.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import structlog
from fastapi import APIRouter, WebSocket

from slipway.platform.events.auth import (
    EVENTS_SUBPROTOCOL,
    get_token_verifier,
    subprotocol_token,
)
from slipway.platform.events.bus import EventBus
from slipway.platform.events.hub import CLOSE_UNAUTHENTICATED

log = structlog.get_logger("slipway.events")

router = APIRouter(tags=["realtime"])

_DISCONNECTED = object()


@router.websocket("/ws/events")
async def events_socket(websocket: WebSocket) -> None:
    """Application events for the authenticated user."""
    services = websocket.app.state.services
    bus: EventBus = services.events
    offered = list(websocket.scope.get("subprotocols") or [])
    token = subprotocol_token(offered)
    await websocket.accept(
        subprotocol=EVENTS_SUBPROTOCOL if EVENTS_SUBPROTOCOL in offered else None
    )
    if token is None:
        received = await _auth_message(websocket, services.settings.ws_auth_timeout)
        if received is _DISCONNECTED:
            return
        token = received if isinstance(received, str) else None
    verifier = get_token_verifier(websocket.app)
    principal = await verifier(token) if token is not None and verifier is not None else None
    if principal is None:
        log.info("ws_auth_failed", token_sent=token is not None)
        with contextlib.suppress(Exception):
            await websocket.close(CLOSE_UNAUTHENTICATED, "authentication required")
        return
    assert token is not None
    await bus.serve(websocket, principal, token, verifier)


async def _auth_message(websocket: WebSocket, timeout: float) -> object:
    """The token of the first message, None for anything else, or _DISCONNECTED."""
    try:
        async with asyncio.timeout(timeout):
            message = await websocket.receive()
    except TimeoutError:
        return None
    if message["type"] == "websocket.disconnect":
        return _DISCONNECTED
    try:
        body = orjson.loads(message.get("text") or message.get("bytes") or b"")
    except orjson.JSONDecodeError:
        return None
    if isinstance(body, dict) and body.get("type") == "auth":
        token = body.get("token")
        if isinstance(token, str) and token:
            return token
    return None
