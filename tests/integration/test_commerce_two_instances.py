"""Two real app instances (uvicorn subprocesses on their own ports) sharing one PostgreSQL
database and one Redis, as behind a load balancer:

- 200 concurrent buyers spread over both instances never oversell a product of stock 50;
- one Idempotency-Key sent ten times at once, to both instances, makes one order;
- the product cache is shared and invalidated on every instance, and If-Match holds;
- an order's status change reaches its owner's WebSocket (and staff's), not another
  customer's, whichever instance each socket is connected to.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from slipway.catalog.models import Product
from slipway.identity.models import User
from slipway.orders.models import Order, OrderLine
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, AppInstance, product_body, start_app_instance, user_row
from tests.integration.conftest import slipway_env
from tests.support.services import PostgresService, RedisService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(240),
]

BUYERS = 20
ORDERS_PER_BUYER = 10  # 200 concurrent purchases
STOCK = 50


@dataclass
class Shop:
    a: AppInstance
    b: AppInstance
    database_url: str
    staff_token: str
    buyers: list[tuple[uuid.UUID, str]]  # (user id, access token)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def staff(self) -> dict[str, str]:
        return self.auth(self.staff_token)


async def _insert_users(database_url: str, rows: list[dict[str, Any]]) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(User), rows)
    finally:
        await engine.dispose()


async def _login_all(instances: list[AppInstance], emails: list[str]) -> list[str]:
    async with httpx.AsyncClient(timeout=60) as http:

        async def login(index: int, email: str) -> str:
            instance = instances[index % len(instances)]
            response = await http.post(
                instance.url("/api/v1/auth/login"), data={"username": email, "password": PASSWORD}
            )
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        return list(await asyncio.gather(*(login(i, e) for i, e in enumerate(emails))))


@pytest.fixture(scope="module")
def shop(
    postgres_server: PostgresService,
    pg_template: str,
    redis_server: RedisService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Shop]:
    workdir = tmp_path_factory.mktemp("commerce-two-instances")
    run = uuid.uuid4().hex[:8]
    dbname = f"commerce_{run}"
    postgres_server.create_database(dbname, template=pg_template)
    database_url = postgres_server.url(dbname)
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url(),
        # This run's keys and channel only: the session's Redis is shared.
        CACHE_PREFIX=f"slipway-commerce-{run}",
        RATE_LIMIT_KEY_PREFIX=f"slipway-commerce:{run}",
        EVENTS_CHANNEL=f"slipway-commerce:{run}:events",
        # 200 purchases in a burst from one test client: limits are tested elsewhere.
        RATE_LIMIT_ENABLED="false",
        # Confirmation mails run in-process (logged); no Celery worker in this test.
        JOBS_BACKEND="embedded",
        # A burst of 100 requests per instance queues for 15 pooled connections.
        DB_POOL_TIMEOUT="60",
    )
    started: list[AppInstance] = []
    try:
        started.append(start_app_instance(env, workdir, "a"))
        started.append(start_app_instance(env, workdir, "b"))
        staff_row = user_row(role="staff")
        buyer_rows = [user_row() for _ in range(BUYERS)]
        asyncio.run(_insert_users(database_url, [staff_row, *buyer_rows]))
        tokens = asyncio.run(
            _login_all(started, [staff_row["email"], *(r["email"] for r in buyer_rows)])
        )
        yield Shop(
            a=started[0],
            b=started[1],
            database_url=database_url,
            staff_token=tokens[0],
            buyers=[(row["id"], token) for row, token in zip(buyer_rows, tokens[1:], strict=True)],
        )
    finally:
        for instance in started:
            instance.process.close()
        postgres_server.drop_database(dbname)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=90, limits=limits) as client:
        yield client


async def new_product(shop: Shop, http: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await http.post(
        shop.a.url("/api/v1/products"), json=product_body(**overrides), headers=shop.staff
    )
    assert response.status_code == 201, response.text
    product: dict[str, Any] = response.json()
    return product


async def db_scalar(shop: Shop, statement: Any) -> Any:
    engine = create_async_engine(shop.database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(statement)).scalar()
    finally:
        await engine.dispose()


async def test_two_hundred_buyers_on_two_instances_never_oversell(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    assert shop.a.process.pid != shop.b.process.pid
    product = await new_product(shop, http, stock=STOCK, price_minor=1999)
    line = [{"product_id": product["id"], "quantity": 1}]
    purchases = [
        (shop.a if n % 2 == 0 else shop.b, token)
        for n, (_, token) in enumerate(shop.buyers * ORDERS_PER_BUYER)
    ]
    assert len(purchases) == 200

    async def buy(instance: AppInstance, token: str) -> httpx.Response:
        return await http.post(
            instance.url("/api/v1/orders"),
            json={"items": line},
            headers={**shop.auth(token), "Idempotency-Key": uuid.uuid4().hex},
        )

    responses = await asyncio.gather(*(buy(instance, token) for instance, token in purchases))

    statuses = [r.status_code for r in responses]
    assert not [r.text for r in responses if r.status_code >= 500]
    assert statuses.count(201) == STOCK
    assert statuses.count(409) == 200 - STOCK
    refused = [r.json()["error"] for r in responses if r.status_code == 409]
    assert {e["code"] for e in refused} == {"insufficient_stock"}
    assert all(e["details"] == [{"product_id": product["id"], "requested": 1}] for e in refused)
    # Both instances sold: the race really ran across processes.
    sold_by = {r.url.port for r in responses if r.status_code == 201}
    assert sold_by == {shop.a.port, shop.b.port}

    assert await db_scalar(shop, select(Product.stock).where(Product.id == product["id"])) == 0
    sold = await db_scalar(
        shop, select(func.sum(OrderLine.quantity)).where(OrderLine.product_id == product["id"])
    )
    assert sold == STOCK
    for instance in (shop.a, shop.b):
        shown = await http.get(instance.url(f"/api/v1/products/{product['id']}"))
        assert shown.json()["stock"] == 0
    late = await buy(shop.b, shop.buyers[0][1])
    assert late.status_code == 409


async def test_one_key_sent_ten_times_to_both_instances_makes_one_order(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    product = await new_product(shop, http, stock=100)
    user_id, token = shop.buyers[3]
    body = {"items": [{"product_id": product["id"], "quantity": 2}]}
    headers = {**shop.auth(token), "Idempotency-Key": f"checkout-{uuid.uuid4()}"}

    responses = await asyncio.gather(
        *(
            http.post((shop.a if n % 2 else shop.b).url("/api/v1/orders"), json=body,
                      headers=headers)
            for n in range(10)
        )
    )  # fmt: skip

    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
    orders = await db_scalar(
        shop,
        select(func.count()).select_from(OrderLine).join(Order)
        .where(OrderLine.product_id == product["id"], Order.user_id == user_id),
    )  # fmt: skip
    assert orders == 1
    assert await db_scalar(shop, select(Product.stock).where(Product.id == product["id"])) == 98

    reused = await http.post(
        shop.a.url("/api/v1/orders"),
        json={"items": [{"product_id": product["id"], "quantity": 5}]},
        headers=headers,
    )
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"


async def test_product_cache_is_shared_and_invalidated_on_both_instances(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    product = await new_product(shop, http, name="Shared kettle")
    path = f"/api/v1/products/{product['id']}"

    loaded_by_a = await http.get(shop.a.url(path))
    served_by_b = await http.get(shop.b.url(path))
    assert (loaded_by_a.headers["x-cache"], served_by_b.headers["x-cache"]) == ("miss", "hit")
    assert served_by_b.content == loaded_by_a.content
    etag = served_by_b.headers["etag"]

    updated = await http.patch(
        shop.a.url(path), json={"name": "Renamed kettle"}, headers={**shop.staff, "If-Match": etag}
    )
    assert updated.status_code == 200, updated.text

    after_b = await http.get(shop.b.url(path))
    assert after_b.headers["x-cache"] == "miss"  # B's view was dropped by A's write
    assert after_b.json()["name"] == "Renamed kettle"
    assert after_b.json()["version"] == product["version"] + 1
    assert after_b.headers["etag"] != etag
    assert (await http.get(shop.a.url(path))).headers["x-cache"] == "hit"

    stale = await http.patch(
        shop.b.url(path), json={"name": "Lost update"}, headers={**shop.staff, "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.json()["error"]["code"] == "stale_version"
    assert (await http.get(shop.a.url(path))).json()["name"] == "Renamed kettle"


async def next_event(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next application event (heartbeats and pongs skipped)."""
    while True:
        message = orjson.loads(await asyncio.wait_for(socket.recv(), timeout))
        if message["type"] not in ("heartbeat", "pong", "ping"):
            return dict(message)


async def open_socket(instance: AppInstance, token: str) -> ClientConnection:
    socket = await connect(instance.ws_url("/ws/events"), open_timeout=10)
    await socket.send(orjson.dumps({"type": "auth", "token": token}).decode())
    ready = await next_event(socket)
    assert ready["type"] == "ready", ready
    return socket


async def test_status_change_reaches_only_the_owner_and_staff(
    shop: Shop, http: httpx.AsyncClient
) -> None:
    product = await new_product(shop, http, stock=5)
    owner_id, owner_token = shop.buyers[5]
    _, other_token = shop.buyers[6]
    placed = await http.post(
        shop.a.url("/api/v1/orders"),
        json={"items": [{"product_id": product["id"], "quantity": 1}]},
        headers={**shop.auth(owner_token), "Idempotency-Key": uuid.uuid4().hex},
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]

    # Sockets on both instances; the change is made through A.
    owner_on_b = await open_socket(shop.b, owner_token)
    other_on_b = await open_socket(shop.b, other_token)
    other_on_a = await open_socket(shop.a, other_token)
    staff_on_b = await open_socket(shop.b, shop.staff_token)
    try:
        paid = await http.post(
            shop.a.url(f"/api/v1/orders/{order_id}/status"),
            json={"status": "paid"},
            headers=shop.staff,
        )
        assert paid.status_code == 200, paid.text
        # Then an event for everyone, published after the status change by the same
        # instance: a socket that receives it first never got the order's event.
        etag = (await http.get(shop.a.url(f"/api/v1/products/{product['id']}"))).headers["etag"]
        sentinel = await http.patch(
            shop.a.url(f"/api/v1/products/{product['id']}"),
            json={"description": "sentinel"},
            headers={**shop.staff, "If-Match": etag},
        )
        assert sentinel.status_code == 200

        for socket in (owner_on_b, staff_on_b):
            event = await next_event(socket)
            assert event["type"] == "order.status_changed", event
            assert event["data"]["order_id"] == order_id
            assert event["data"]["status"] == "paid"
            assert (await next_event(socket))["type"] == "product.updated"
        for socket in (other_on_b, other_on_a):
            event = await next_event(socket)
            assert event["type"] == "product.updated", event
            assert event["data"]["id"] == product["id"]
        assert owner_id != shop.buyers[6][0]
    finally:
        for socket in (owner_on_b, other_on_b, other_on_a, staff_on_b):
            await socket.close()
