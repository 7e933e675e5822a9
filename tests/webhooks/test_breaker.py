"""The per-endpoint circuit breaker against a receiver that fails on demand: it opens
after WEBHOOK_BREAKER_THRESHOLD failures, refuses without calling the receiver while
open, half-opens after WEBHOOK_BREAKER_RESET_SECONDS (one trial delivery), and closes on
success. With Redis its state is shared by every process."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from slipway.platform.services import open_services
from slipway.webhooks.breaker import breakers_for
from slipway.webhooks.delivery import CircuitOpenRetryError, DeliveryFailedError
from tests.conftest import make_settings
from tests.factories import Person
from tests.webhooks.conftest import RESET_SECONDS, THRESHOLD, WEBHOOKS, Receiver, register_ok
from tests.webhooks.test_delivery import deliveries
from tests.webhooks.test_ssrf import deliver_once


@pytest.fixture
def backend() -> str:
    return "sqlite"  # breaker state is not in the database; one backend is enough


async def circuit(client: httpx.AsyncClient, admin: Person, endpoint_id: str) -> str:
    response = await client.get(f"{WEBHOOKS}/{endpoint_id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    return str(response.json()["circuit_state"])


async def test_breaker_opens_half_opens_and_closes(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    endpoint = await register_ok(client, admin.headers, receiver.url())
    endpoint_id = uuid.UUID(endpoint["id"])
    receiver.fail_with(503)

    # Closed: every failure reaches the receiver, until the threshold opens the circuit.
    for failures in range(1, THRESHOLD + 1):
        assert await circuit(client, admin, endpoint["id"]) == "closed"
        with pytest.raises(DeliveryFailedError):
            await deliver_once(app, endpoint_id)
        assert receiver.count() == failures
    assert await circuit(client, admin, endpoint["id"]) == "opened"

    # Open: refused without calling the receiver; the job will retry later.
    with pytest.raises(CircuitOpenRetryError):
        await deliver_once(app, endpoint_id)
    assert receiver.count() == THRESHOLD

    # After the reset timeout one trial goes through (half-open); it fails: open again at
    # once, without waiting for THRESHOLD failures.
    await asyncio.sleep(RESET_SECONDS + 0.2)
    with pytest.raises(DeliveryFailedError):
        await deliver_once(app, endpoint_id)
    assert receiver.count() == THRESHOLD + 1
    assert await circuit(client, admin, endpoint["id"]) == "opened"
    with pytest.raises(CircuitOpenRetryError):
        await deliver_once(app, endpoint_id)

    # Next trial: the receiver is back. While it is in flight the circuit is half-open;
    # its success closes it.
    await asyncio.sleep(RESET_SECONDS + 0.2)
    receiver.fail_with(204)
    receiver.delay = 0.5
    trial = asyncio.create_task(deliver_once(app, endpoint_id))
    await asyncio.sleep(0.25)
    assert await circuit(client, admin, endpoint["id"]) == "half-opened"
    assert (await trial)["status_code"] == 204
    assert await circuit(client, admin, endpoint["id"]) == "closed"

    # Closed again with a fresh count: one failure does not reopen it.
    receiver.delay = 0
    receiver.fail_with(500)
    with pytest.raises(DeliveryFailedError):
        await deliver_once(app, endpoint_id)
    assert await circuit(client, admin, endpoint["id"]) == "closed"

    statuses = [row["status"] for row in await deliveries(client, admin, endpoint["id"])]
    assert statuses == [
        *["failed"] * THRESHOLD,
        "circuit_open",
        "failed",
        "circuit_open",
        "succeeded",
        "failed",
    ]


async def test_each_endpoint_has_its_own_breaker(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    failing = await register_ok(client, admin.headers, receiver.url("/failing"))
    healthy = await register_ok(client, admin.headers, receiver.url("/healthy"))
    receiver.fail_with(500)
    for _ in range(THRESHOLD):
        with pytest.raises(DeliveryFailedError):
            await deliver_once(app, uuid.UUID(failing["id"]))
    receiver.fail_with(200)

    assert (await deliver_once(app, uuid.UUID(healthy["id"])))["status_code"] == 200
    assert await circuit(client, admin, failing["id"]) == "opened"
    assert await circuit(client, admin, healthy["id"]) == "closed"


@pytest.mark.redis
async def test_with_redis_every_process_shares_the_breaker_state(
    redis_server: Any,
    client: httpx.AsyncClient,
    app: FastAPI,
    admin: Person,
    receiver: Receiver,
    settings: Any,
) -> None:
    """Two service containers (as two worker processes have) on one Redis: failures seen
    by one open the circuit for the other."""
    endpoint = await register_ok(client, admin.headers, receiver.url())
    endpoint_id = uuid.UUID(endpoint["id"])
    shared = settings.model_copy(
        update={"redis_url": redis_server.url(), "cache_prefix": f"t{uuid.uuid4().hex[:12]}"}
    )
    receiver.fail_with(502)
    async with open_services(shared) as first, open_services(shared) as second:
        assert breakers_for(first) is not breakers_for(second)
        assert breakers_for(first).storage == "redis"
        for _ in range(THRESHOLD - 1):
            with pytest.raises(DeliveryFailedError):
                await deliver_once(app, endpoint_id, first)
        # The threshold's last failure happens in the other process.
        with pytest.raises(DeliveryFailedError):
            await deliver_once(app, endpoint_id, second)
        assert await breakers_for(first).state(endpoint_id) == "opened"
        with pytest.raises(CircuitOpenRetryError):
            await deliver_once(app, endpoint_id, first)
        assert receiver.count() == THRESHOLD

        await asyncio.sleep(RESET_SECONDS + 0.2)
        receiver.fail_with(204)
        assert (await deliver_once(app, endpoint_id, second))["status_code"] == 204
        assert await breakers_for(first).state(endpoint_id) == "closed"

        # Deleting an endpoint drops its (here: open) state from Redis.
        receiver.fail_with(500)
        for _ in range(THRESHOLD):
            with pytest.raises(DeliveryFailedError):
                await deliver_once(app, endpoint_id, first)
        assert await breakers_for(second).state(endpoint_id) == "opened"
        await breakers_for(first).forget(endpoint_id)
        assert await breakers_for(second).state(endpoint_id) == "closed"

    # Without Redis, state is per process (embedded mode).
    async with open_services(make_settings(database_url=settings.database_url)) as alone:
        assert breakers_for(alone).storage == "memory"
