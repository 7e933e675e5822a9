"""The SSRF guard: refused at registration and again at delivery, after DNS resolution."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from slipway.orders.models import Order
from slipway.platform.jobs.models import Job
from slipway.platform.services import open_services
from slipway.webhooks.delivery import Attempt, TargetBlockedError, deliver
from slipway.webhooks.models import WebhookDelivery, WebhookEndpoint
from slipway.webhooks.ssrf import BlockedTargetError, check_target
from tests.conftest import TEST_SECRET, make_settings
from tests.factories import Person, create_product, customer, place_order, session_factory
from tests.webhooks.conftest import Receiver, register, register_ok
from tests.webhooks.waiting import wait_for

ALWAYS_BLOCKED = [
    ("http://10.0.0.1/hook", "private"),
    ("http://192.168.1.20/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ("http://[fd12:3456::1]/hook", "unique-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://100.64.0.1/hook", "not a public address"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://[64:ff9b::a9fe:a9fe]/hook", "metadata"),
    ("https://user:pass@example.com/hook", "credentials"),
    ("ftp://example.com/hook", "scheme"),
]


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the guard is database-independent; API behaviour runs on both in test_api


@pytest.mark.parametrize(("url", "why"), ALWAYS_BLOCKED)
async def test_refused_at_registration_even_with_the_loopback_allowance(
    client: httpx.AsyncClient, admin: Person, url: str, why: str
) -> None:
    response = await register(client, admin.headers, url)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "webhook_url_blocked"
    assert why in error["details"][0]["message"]


@pytest.mark.parametrize("settings_overrides", [{"webhook_allow_loopback": False}], indirect=True)
@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.9.9.9",
        "[::1]",
        "[::ffff:127.0.0.1]",
        # Names and odd spellings that only resolution reveals as loopback.
        "localhost",
        "2130706433",
        "0x7f.1",
    ],
)
async def test_loopback_is_refused_without_the_test_allowance(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver, host: str
) -> None:
    response = await register(client, admin.headers, receiver.url(host=host))
    assert response.status_code == 422, response.text
    assert "loopback" in response.json()["error"]["details"][0]["message"]
    assert receiver.count() == 0


async def test_the_allowance_admits_loopback_names_and_keeps_the_host_header(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver, app: FastAPI
) -> None:
    """`localhost` is resolved once and the connection goes to that address; the
    receiver still sees the name the staff member registered."""
    created = await register_ok(client, admin.headers, receiver.url(host="localhost"))
    await deliver_once(app, uuid.UUID(created["id"]))
    assert receiver.count() == 1
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


def production(**overrides: Any) -> Any:
    return make_settings(
        environment="production",
        secret_key=TEST_SECRET,
        database_url="postgresql+asyncpg://u@db.internal/slipway",
        allow_embedded_jobs_in_production=True,
        **overrides,
    )


async def test_production_accepts_https_only() -> None:
    with pytest.raises(BlockedTargetError, match="scheme must be https"):
        await check_target("http://93.184.215.14/hook", production())
    target = await check_target("https://93.184.215.14/hook", production())
    assert str(target.address) == "93.184.215.14"


def test_production_refuses_the_loopback_allowance() -> None:
    with pytest.raises(ValueError, match="WEBHOOK_ALLOW_LOOPBACK"):
        production(webhook_allow_loopback=True)


async def deliver_once(app: FastAPI, endpoint_id: uuid.UUID, services: Any = None) -> Any:
    services = services or app.state.services
    async with services.session_factory() as session:
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
    attempt = Attempt(uuid.uuid4(), 1, endpoint_id, "msg_test", "order.created", b"{}")
    return await deliver(services, endpoint, attempt)


async def delivery_statuses(app: FastAPI, endpoint_id: uuid.UUID) -> list[str]:
    async with session_factory(app)() as session:
        rows = await session.scalars(
            select(WebhookDelivery.status)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.id)
        )
        return list(rows.all())


async def test_refused_again_at_delivery_when_the_name_now_resolves_to_loopback(
    client: httpx.AsyncClient, admin: Person, receiver: Receiver, app: FastAPI, settings: Any
) -> None:
    """Registered while allowed; a process without the allowance (or a name whose DNS
    answer changed) refuses to send, records why, and never touches the receiver."""
    created = await register_ok(client, admin.headers, receiver.url(host="localhost"))
    endpoint_id = uuid.UUID(created["id"])
    strict = settings.model_copy(update={"webhook_allow_loopback": False})
    async with open_services(strict) as services:
        with pytest.raises(TargetBlockedError, match=r"resolves to 127\.0\.0\.1, a loopback"):
            await deliver_once(app, endpoint_id, services)
    assert receiver.count() == 0
    assert await delivery_statuses(app, endpoint_id) == ["blocked"]


async def test_a_blocked_delivery_job_fails_at_once_without_retries(
    client: httpx.AsyncClient, app: FastAPI, admin: Person, receiver: Receiver
) -> None:
    created = await register_ok(client, admin.headers, receiver.url(), ["order.created"])
    endpoint_id = uuid.UUID(created["id"])
    # A row written before the rules existed (or by hand): delivery checks it again.
    async with session_factory(app)() as session, session.begin():
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == endpoint_id)
            .values(url="http://169.254.169.254/latest/meta-data/iam/")
        )
    product = await create_product(client, admin.headers, stock=5)
    buyer = await customer(client, app)
    assert (
        await place_order(client, buyer.headers, [{"product_id": product["id"], "quantity": 1}])
    ).status_code == 201

    async def job_failed() -> bool:
        async with session_factory(app)() as session:
            job = await session.scalar(select(Job).where(Job.kind == "webhooks.deliver"))
            return job is not None and job.status == "failed"

    await wait_for(job_failed, timeout=10)
    async with session_factory(app)() as session:
        job = await session.scalar(select(Job).where(Job.kind == "webhooks.deliver"))
        assert job is not None
        assert job.attempts == 1
        assert "metadata" in (job.error or "")
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
    assert await delivery_statuses(app, endpoint_id) == ["blocked"]
    assert receiver.count() == 0
