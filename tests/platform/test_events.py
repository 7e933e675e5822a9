"""Realtime events over GET /ws/events, in-process: authentication (first message or
subprotocol, 4401 otherwise), targeting (everyone, a user, staff), heartbeats, token
re-checks, Redis fan-out between two apps, and degraded delivery when Redis is down.
The real-server scenarios (two uvicorn instances, slow consumer, shutdown) live in
tests/integration/test_ws_fanout.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from slipway.app import create_app
from slipway.platform.events.auth import install_token_verifier
from tests.conftest import make_settings
from tests.platform.realtime_support import (
    FakePrincipal,
    token_for,
    verify_test_token,
    with_test_verifier,
)
from tests.support.ports import free_port

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
STAFF = uuid.UUID("00000000-0000-4000-8000-00000000057a")


@pytest.fixture
def backend() -> str:
    """Events do not touch the database; SQLite keeps these tests quick."""
    return "sqlite"


@contextmanager
def running(database_url: str, **overrides: Any) -> Iterator[TestClient]:
    values: dict[str, Any] = {"rate_limit_enabled": False, "ws_auth_timeout": 0.5}
    values.update(overrides)
    app = with_test_verifier(create_app(make_settings(database_url=database_url, **values)))
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with running(database_url) as test_client:
        yield test_client


def publish(client: TestClient, **body: Any) -> None:
    response = client.post("/testing/events", json=body)
    assert response.status_code == 200, response.text


def connect(
    stack: ExitStack, client: TestClient, user_id: uuid.UUID, role: str = "customer"
) -> Any:
    """Open a socket (closed with `stack`) authenticated by its first message."""
    websocket = stack.enter_context(client.websocket_connect("/ws/events"))
    websocket.send_json({"type": "auth", "token": token_for(user_id, role)})
    ready = websocket.receive_json()
    assert ready["type"] == "ready"
    assert ready["user_id"] == str(user_id)
    return websocket


def test_first_message_authenticates(client: TestClient) -> None:
    with client.websocket_connect("/ws/events") as websocket:
        websocket.send_json({"type": "auth", "token": token_for(ALICE)})
        ready = websocket.receive_json()
        publish(client, type="hello", data={"n": 1}, everyone=True)
        event = websocket.receive_json()

    assert ready["type"] == "ready"
    assert ready["user_id"] == str(ALICE)
    assert event["type"] == "hello"
    assert event["data"] == {"n": 1, "seq": 0}
    assert {"id", "ts"} <= event.keys()


def test_subprotocol_authenticates_without_a_first_message(client: TestClient) -> None:
    protocols = ["slipway.events.v1", f"slipway.bearer.{token_for(BOB)}"]
    with client.websocket_connect("/ws/events", subprotocols=protocols) as websocket:
        ready = websocket.receive_json()

        assert websocket.accepted_subprotocol == "slipway.events.v1"
        assert ready["user_id"] == str(BOB)


@pytest.mark.parametrize(
    "first_message",
    [
        {"type": "auth", "token": "customer.not-a-uuid"},
        {"type": "auth", "token": ""},
        {"type": "subscribe"},
        None,  # says nothing until the auth timeout
    ],
)
def test_missing_or_invalid_token_closes_with_4401(
    client: TestClient, first_message: dict[str, Any] | None
) -> None:
    with client.websocket_connect("/ws/events") as websocket:
        if first_message is not None:
            websocket.send_json(first_message)
        with pytest.raises(WebSocketDisconnect) as closed:
            websocket.receive_json()

    assert closed.value.code == 4401


def test_invalid_subprotocol_token_closes_with_4401(client: TestClient) -> None:
    protocols = ["slipway.events.v1", "slipway.bearer.forged"]
    with (
        client.websocket_connect("/ws/events", subprotocols=protocols) as websocket,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        websocket.receive_json()

    assert closed.value.code == 4401


def drain(websocket: Any) -> None:
    """Receive until the server closes the socket (WebSocketDisconnect)."""
    while True:
        websocket.receive_json()


def test_events_reach_only_their_audience(client: TestClient) -> None:
    with ExitStack() as stack:
        alice = connect(stack, client, ALICE)
        bob = connect(stack, client, BOB)
        staff = connect(stack, client, STAFF, "staff")
        publish(client, type="order.paid", users=[str(ALICE)], staff=True)
        publish(client, type="staff.note", staff=True)
        publish(client, type="broadcast", everyone=True)

        received = {
            name: [socket.receive_json()["type"] for _ in range(count)]
            for name, socket, count in (("alice", alice, 2), ("bob", bob, 1), ("staff", staff, 3))
        }

    # Each socket's next message after its own events is the broadcast: nothing else came.
    assert received == {
        "alice": ["order.paid", "broadcast"],
        "bob": ["broadcast"],
        "staff": ["order.paid", "staff.note", "broadcast"],
    }


def test_idle_connections_get_heartbeats_and_pongs(database_url: str) -> None:
    with running(database_url, ws_heartbeat_seconds=0.2) as client, ExitStack() as stack:
        websocket = connect(stack, client, ALICE)
        heartbeat = websocket.receive_json()
        websocket.send_json({"type": "ping"})
        pong = websocket.receive_json()
        while pong["type"] == "heartbeat":
            pong = websocket.receive_json()

    assert heartbeat["type"] == "heartbeat"
    assert pong["type"] == "pong"


def test_revoked_token_is_disconnected_at_the_next_check(database_url: str) -> None:
    revoked: set[str] = set()

    async def verifier(token: str) -> FakePrincipal | None:
        return None if token in revoked else await verify_test_token(token)

    with running(database_url, ws_heartbeat_seconds=0.2) as client, ExitStack() as stack:
        install_token_verifier(client.app, verifier)
        websocket = connect(stack, client, ALICE)
        assert websocket.receive_json()["type"] == "heartbeat"
        revoked.add(token_for(ALICE))
        with pytest.raises(WebSocketDisconnect) as closed:
            drain(websocket)

    assert closed.value.code == 4401


@pytest.mark.redis
def test_redis_fans_out_between_two_apps(database_url: str, redis_server: Any) -> None:
    shared = {"redis_url": redis_server.url(), "events_channel": f"t:{uuid.uuid4().hex}"}
    with (
        running(database_url, **shared) as first,
        running(database_url, **shared) as second,
        ExitStack() as stack,
    ):
        websocket = connect(stack, second, ALICE)
        publish(first, type="from.first", users=[str(ALICE)])
        event = websocket.receive_json()

    assert event["type"] == "from.first"


def test_redis_outage_degrades_to_local_delivery(database_url: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    with running(database_url, redis_url=dead_redis) as client, ExitStack() as stack:
        websocket = connect(stack, client, ALICE)
        publish(client, type="still.here", everyone=True)
        event = websocket.receive_json()

    assert event["type"] == "still.here"
