"""Realtime events across real servers: two uvicorn instances sharing one Redis. An event
published on A reaches WebSocket clients on B (and only its audience), a slow consumer is
closed with 1013 while a fast one receives everything, the token never reaches the logs,
and SIGTERM closes open sockets within the graceful timeout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.conftest import TEST_SECRET
from tests.integration.conftest import slipway_env
from tests.platform.realtime_support import token_for
from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess, RedisService

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.timeout(180)]

REPO_ROOT = Path(__file__).resolve().parents[2]
ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
STAFF = uuid.UUID("00000000-0000-4000-8000-00000000057a")
SEND_QUEUE = 32
GRACEFUL_TIMEOUT = 3
RECEIVE_TIMEOUT = 15.0


@dataclass
class Instance:
    process: ManagedProcess
    port: int

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{path}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws/events"


def start_instance(env: dict[str, str], workdir: Path, name: str) -> Instance:
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process = ManagedProcess(
            [
                sys.executable, "-m", "uvicorn", "--factory",
                "tests.platform.realtime_support:create_test_app",
                "--host", LOOPBACK, "--port", str(port), "--no-access-log",
                "--timeout-graceful-shutdown", str(GRACEFUL_TIMEOUT),
            ],
            name=f"uvicorn-{name}",
            env=env,
            inherit_env=False,
            cwd=REPO_ROOT,
            log_path=workdir / f"{name}.{attempt}.log",
        ).start()  # fmt: skip
        try:
            process.wait_for_http(f"http://{LOOPBACK}:{port}/health/live", timeout=60)
        except Exception:
            process.close()
            if "address already in use" in process.log_text().lower():
                continue
            raise
        return Instance(process, port)
    raise RuntimeError("no free port for uvicorn")


@pytest.fixture(scope="module")
def instance_env(
    redis_server: RedisService, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], Path]:
    workdir = tmp_path_factory.mktemp("ws-fanout")
    database = workdir / "app.db"
    database.write_bytes(sqlite_template.read_bytes())
    run = uuid.uuid4().hex[:8]
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        PYTHONPATH=str(REPO_ROOT),
        DATABASE_URL=f"sqlite+aiosqlite:///{database}",
        REDIS_URL=redis_server.url(),
        # This run's channel and keys only: the session's Redis is shared.
        EVENTS_CHANNEL=f"slipway-it:{run}:events",
        CACHE_PREFIX=f"slipway-it-{run}",
        RATE_LIMIT_ENABLED="false",
        WS_SEND_QUEUE_SIZE=str(SEND_QUEUE),
        WS_CLOSE_TIMEOUT="10",
        GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT),
    )
    return env, workdir


@pytest.fixture(scope="module")
def instances(instance_env: tuple[dict[str, str], Path]) -> Iterator[tuple[Instance, Instance]]:
    env, workdir = instance_env
    first = start_instance(env, workdir, "a")
    try:
        second = start_instance(env, workdir, "b")
    except Exception:
        first.process.close()
        raise
    try:
        yield first, second
    finally:
        second.process.close()
        first.process.close()


async def publish(instance: Instance, **body: Any) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(instance.url("/testing/events"), json=body)
    assert response.status_code == 200, response.text


async def receive(websocket: ClientConnection) -> dict[str, Any]:
    """The next application message (heartbeats skipped)."""
    while True:
        message: dict[str, Any] = orjson.loads(
            await asyncio.wait_for(websocket.recv(), RECEIVE_TIMEOUT)
        )
        if message["type"] != "heartbeat":
            return message


@contextlib.asynccontextmanager
async def subscriber(
    instance: Instance, user_id: uuid.UUID, role: str = "customer", **options: Any
) -> AsyncIterator[ClientConnection]:
    async with connect(instance.ws_url, **options) as websocket:
        await websocket.send(orjson.dumps({"type": "auth", "token": token_for(user_id, role)}))
        ready = await receive(websocket)
        assert ready["type"] == "ready", ready
        yield websocket


async def test_event_published_on_a_reaches_its_audience_on_b(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    async with (
        subscriber(second, ALICE) as alice,
        subscriber(second, BOB) as bob,
        subscriber(second, STAFF, "staff") as staff,
    ):
        await publish(first, type="order.paid", users=[str(ALICE)], staff=True)
        await publish(first, type="broadcast", everyone=True)

        alice_got = [(await receive(alice))["type"] for _ in range(2)]
        staff_got = [(await receive(staff))["type"] for _ in range(2)]
        bob_got = [(await receive(bob))["type"]]

    assert alice_got == ["order.paid", "broadcast"]
    assert staff_got == ["order.paid", "broadcast"]
    # Bob's first message is the broadcast: the order event never reached him.
    assert bob_got == ["broadcast"]


async def test_subprotocol_token_never_reaches_the_logs(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    token = token_for(uuid.uuid4())
    protocols: Any = ["slipway.events.v1", f"slipway.bearer.{token}"]
    async with connect(second.ws_url, subprotocols=protocols) as websocket:
        ready = await receive(websocket)
        await publish(first, type="hello", everyone=True)
        hello = await receive(websocket)

        assert websocket.subprotocol == "slipway.events.v1"
    assert ready["type"] == "ready"
    assert hello["type"] == "hello"
    assert '"ws_connected"' in second.process.log_text()
    assert token not in second.process.log_text()


async def test_unauthenticated_socket_is_closed_with_4401(
    instances: tuple[Instance, Instance],
) -> None:
    _, second = instances
    async with connect(second.ws_url) as websocket:
        await websocket.send(orjson.dumps({"type": "auth", "token": "forged"}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), RECEIVE_TIMEOUT)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


class StalledClient:
    """A WebSocket client that stops reading after the handshake, over a plain socket with a
    tiny receive buffer. (A client library would keep reading into its own buffers and
    hide the backpressure from the server.)"""

    def __init__(self, instance: Instance, token: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(RECEIVE_TIMEOUT)
        self.sock.connect((LOOPBACK, instance.port))
        self.protocol = ClientProtocol(parse_uri(instance.ws_url), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = self._next_event()
        assert isinstance(response, Response)
        assert response.status_code == 101, response
        self.protocol.send_text(orjson.dumps({"type": "auth", "token": token}))
        self._flush()
        ready = self._next_event()
        assert isinstance(ready, Frame)
        assert orjson.loads(ready.data)["type"] == "ready"

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def _next_event(self) -> Any:
        while True:
            events = self.protocol.events_received()
            if events:
                (event,) = events
                return event
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self._flush()

    def read_until_closed(self) -> tuple[int, int | None]:
        """Read everything the server sent; the number of text messages and the close code."""
        messages = 0
        while True:
            data = self.sock.recv(1 << 20)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self._flush()
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    messages += 1
            if self.protocol.close_rcvd is not None or not data:
                code = self.protocol.close_rcvd.code if self.protocol.close_rcvd else None
                return messages, code

    def close(self) -> None:
        self.sock.close()


async def test_slow_consumer_is_closed_while_a_fast_one_keeps_receiving(
    instances: tuple[Instance, Instance],
) -> None:
    first, second = instances
    # More than the kernel buffers for a client that stops reading (the server's send
    # buffer autotunes up to net.ipv4.tcp_wmem's 4 MiB) plus the server's send queue.
    count, pad = 320, 32_768
    slow = await asyncio.to_thread(StalledClient, second, token_for(ALICE))
    try:
        async with subscriber(second, BOB) as fast:

            async def read_all() -> list[int]:
                return [(await receive(fast))["data"]["seq"] for _ in range(count)]

            reader = asyncio.create_task(read_all())
            # Published on the other instance while the slow client reads nothing.
            await publish(first, type="burst", everyone=True, count=count, pad=pad, interval=0.002)
            fast_seqs = await reader
            # The fast client is still served after the slow one was dropped.
            await publish(first, type="after", everyone=True)
            after = await receive(fast)

        started = time.monotonic()
        slow_received, close_code = await asyncio.to_thread(slow.read_until_closed)
        drained_after = time.monotonic() - started
    finally:
        slow.close()

    assert fast_seqs == list(range(count))
    assert after["type"] == "after"
    assert close_code == 1013
    assert slow_received < count
    assert drained_after < RECEIVE_TIMEOUT
    assert '"ws_slow_consumer_closed"' in second.process.log_text()


async def test_sigterm_closes_open_sockets_within_the_graceful_timeout(
    instance_env: tuple[dict[str, str], Path],
) -> None:
    env, workdir = instance_env
    instance = start_instance(env, workdir, "shutdown")
    try:
        async with subscriber(instance, ALICE) as websocket:
            started = time.monotonic()
            instance.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                await receive(websocket)
            closed_after = time.monotonic() - started
        code = await asyncio.to_thread(instance.process.wait, GRACEFUL_TIMEOUT + 10)
        exited_after = time.monotonic() - started
        log = instance.process.log_text()
    finally:
        instance.process.close()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code in (1001, 1012)
    assert closed_after < GRACEFUL_TIMEOUT
    assert exited_after < GRACEFUL_TIMEOUT + 5
    assert code in (0, -signal.SIGTERM)
    assert "services_closed" in log
