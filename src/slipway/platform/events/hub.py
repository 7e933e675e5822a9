"""This process's WebSocket connections and the delivery of events to them.

Each connection has a bounded send queue drained by its own sender task. Delivery only
ever does `put_nowait`: a consumer whose queue is full is closed with 1013 (try again
later) instead of slowing the publisher or any other connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import anyio
import orjson
import structlog
from starlette.websockets import WebSocket

from slipway.platform.db.base import utcnow
from slipway.platform.events.auth import Principal, TokenVerifier
from slipway.platform.events.models import Audience
from slipway.platform.metrics import hooks as metrics
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.events")

CLOSE_GOING_AWAY = 1001
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHENTICATED = 4401


class Connection:
    def __init__(
        self, websocket: WebSocket, principal: Principal, token: str, queue_size: int
    ) -> None:
        self.websocket = websocket
        self.principal = principal
        self.token = token
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.closing = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def offer(self, message: str) -> bool:
        """Queue `message` without waiting; close the connection when it cannot keep up."""
        if self.closing.is_set():
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            log.warning(
                "ws_slow_consumer_closed",
                user_id=str(self.principal.user_id),
                queued=self.queue.qsize(),
            )
            self.request_close(CLOSE_TRY_AGAIN_LATER, "too slow: send queue full")
            return False
        return True

    def request_close(self, code: int, reason: str) -> None:
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()


def _message(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, "ts": utcnow(), **fields}).decode()


class LocalHub:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._connections: set[Connection] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def deliver(self, audience: Audience, message: str) -> int:
        """Offer `message` to every connection `audience` includes; never waits."""
        delivered = 0
        for connection in list(self._connections):
            if audience.includes(connection.principal) and connection.offer(message):
                delivered += 1
        return delivered

    async def serve(
        self,
        websocket: WebSocket,
        principal: Principal,
        token: str,
        verifier: TokenVerifier | None,
    ) -> None:
        """Run an authenticated connection until the client leaves or we close it."""
        settings = self._settings
        connection = Connection(websocket, principal, token, settings.ws_send_queue_size)
        self._connections.add(connection)
        metrics.ws_connected()
        self._idle.clear()
        bound = log.bind(user_id=str(principal.user_id))
        bound.info("ws_connected", connections=len(self._connections))
        try:
            await websocket.send_text(
                _message(
                    "ready",
                    user_id=str(principal.user_id),
                    heartbeat_seconds=settings.ws_heartbeat_seconds,
                )
            )
            client_left = await self._run_connection(connection, verifier)
            if not client_left:
                await self._close(connection)
            bound.info(
                "ws_disconnected",
                code=None if client_left else connection.close_code,
                by="client" if client_left else "server",
            )
        finally:
            self._connections.discard(connection)
            metrics.ws_disconnected()
            if not self._connections:
                self._idle.set()

    async def _run_connection(self, connection: Connection, verifier: TokenVerifier | None) -> bool:
        """Send, receive and watch for a close request until one of them ends; True when
        the client went away (nothing left to close)."""
        client_left = False

        async def receive() -> None:
            nonlocal client_left
            with contextlib.suppress(Exception):
                await self._receive_loop(connection)
            client_left = True
            group.cancel_scope.cancel()

        async def send() -> None:
            nonlocal client_left
            try:
                await self._send_loop(connection, verifier)
            except Exception:
                client_left = True  # the transport is gone
            group.cancel_scope.cancel()

        async def watch() -> None:
            await connection.closing.wait()
            group.cancel_scope.cancel()

        # A task group (not bare tasks): when the server cancels this handler, the three
        # loops are cancelled with it and nothing outlives the connection.
        async with anyio.create_task_group() as group:
            group.start_soon(receive)
            group.start_soon(send)
            group.start_soon(watch)
        return client_left

    async def _send_loop(self, connection: Connection, verifier: TokenVerifier | None) -> None:
        heartbeat = self._settings.ws_heartbeat_seconds
        next_check = time.monotonic() + heartbeat
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    message = await connection.queue.get()
            except TimeoutError:
                message = _message("heartbeat")
            if verifier is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + heartbeat
                if not await self._still_valid(connection, verifier):
                    connection.request_close(CLOSE_UNAUTHENTICATED, "token expired or revoked")
                    return
            await connection.websocket.send_text(message)

    @staticmethod
    async def _still_valid(connection: Connection, verifier: TokenVerifier) -> bool:
        # Re-checking the token bounds how long a revoked session keeps receiving events.
        try:
            return await verifier(connection.token) is not None
        except Exception:
            # The identity store is down: keep the connection rather than drop everyone.
            log.warning("ws_token_recheck_failed", exc_info=True)
            return True

    @staticmethod
    async def _receive_loop(connection: Connection) -> None:
        while True:
            message = await connection.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if not text:
                continue
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError:
                continue
            if isinstance(body, dict) and body.get("type") == "ping":
                connection.offer(_message("pong"))

    async def _close(self, connection: Connection) -> None:
        # A stalled client cannot take the close frame either: bound the wait, then let
        # the server drop the transport.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._settings.ws_close_timeout):
                await connection.websocket.close(connection.close_code, connection.close_reason)

    async def close_all(
        self, code: int = CLOSE_GOING_AWAY, reason: str = "server shutdown"
    ) -> None:
        """Ask every connection to close and wait (bounded) until they are gone."""
        for connection in list(self._connections):
            connection.request_close(code, reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.ws_close_timeout + 1):
                await self._idle.wait()
