"""PostgreSQL restarted under load (a private cluster; the session's server is never stopped)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from slipway.platform.db.migrate import upgrade
from tests.conftest import make_settings
from tests.reliability.conftest import Figures
from tests.reliability.load import (
    GetJson,
    LoadGenerator,
    PlaceOrder,
    poll_readiness,
    seconds_since,
)
from tests.reliability.support import AppServer, Shop, seed_shop, server_env
from tests.support.services import PostgresServer, ServiceUnavailable, require_or_skip

SETTLE_SECONDS = 2.0
#: How long the database stays down: long enough for every check to notice.
OUTAGE_SECONDS = 3.0
DETECT_LIMIT_SECONDS = 5.0
RECOVERY_LIMIT_SECONDS = 5.0
MAX_LOAD_SECONDS = 60.0
DBNAME = "shop"


@dataclass
class App:
    server: AppServer
    shop: Shop
    postgres: PostgresServer


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    try:
        postgres = PostgresServer().start()
    except ServiceUnavailable as error:
        require_or_skip(str(error))
    server: AppServer | None = None
    try:
        postgres.create_database(DBNAME)
        upgrade(make_settings(database_url=postgres.url(DBNAME)))
        workdir = tmp_path_factory.mktemp("database-restart")
        # No Redis: readiness then depends on the database alone.
        server = AppServer("app", server_env(postgres.url(DBNAME)), workdir).start()
        shop = seed_shop(postgres, DBNAME, server.url("/api/v1/auth/login"), buyers=4, catalog=2)
        yield App(server, shop, postgres)
    finally:
        if server is not None:
            server.close()
        postgres.close()


async def test_database_restart_is_detected_and_survived(app: App, figures: Figures) -> None:
    """Claim: PostgreSQL restarted under load (orders and product reads straight to
    gunicorn): /health/ready answers 503 within 5 s of the stop; within 5 s of the database
    accepting connections again, readiness is 200 and orders are placed again, by the same
    processes (no restart); every order acknowledged with 201 is in the database."""
    server, shop, postgres = app.server, app.shop, app.postgres
    master, workers = server.pid, server.worker_pids()

    async with (
        poll_readiness(server.url("/health/ready")) as readiness,
        LoadGenerator(
            server.url(""),
            [[GetJson("product", shop.product_paths())] for _ in range(3)]
            + [[PlaceOrder(buyer.token, buyer.product_id)] for buyer in shop.buyers],
            max_seconds=MAX_LOAD_SECONDS,
            first_address=100,
        ) as load,
    ):
        await asyncio.sleep(SETTLE_SECONDS)
        stopping = time.monotonic()
        await asyncio.to_thread(postgres.stop)
        stopped = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)
        await asyncio.to_thread(postgres.start)
        back = time.monotonic()
        await load.wait_for(
            lambda r: r.first(lambda a: a.op == "order" and a.ok, after=back) is not None,
            timeout=RECOVERY_LIMIT_SECONDS * 3,
        )
        await asyncio.sleep(SETTLE_SECONDS)
    report = load.report

    not_ready = readiness.first(lambda s: s.status == 503, after=stopping)
    ready_again = readiness.first(lambda s: s.status == 200, after=back)
    order_again = report.first(lambda a: a.op == "order" and a.ok, after=back)
    acknowledged = report.created_order_ids()
    during = [a for a in report.of("order") if stopping <= a.started <= back]
    figures(
        "database restart",
        requests=report.sent(),
        orders_acknowledged=len(acknowledged),
        orders_failed=len(report.failures("order")),
        order_statuses=dict(report.statuses("order")),
        order_statuses_during_outage=dict(Counter(str(a.status or "error") for a in during)),
        product_reads_failed=len(report.failures("product")),
        stop_took_s=stopped - stopping,
        readiness_503_after_s=seconds_since(not_ready, stopping),
        readiness_200_after_return_s=seconds_since(ready_again, back),
        first_order_after_return_s=seconds_since(
            order_again.finished if order_again else None, back
        ),
    )

    assert not_ready is not None
    assert not_ready - stopping <= DETECT_LIMIT_SECONDS
    assert ready_again is not None
    assert ready_again - back <= RECOVERY_LIMIT_SECONDS
    assert order_again is not None
    assert order_again.finished - back <= RECOVERY_LIMIT_SECONDS
    assert server.pid == master, "the master was restarted"
    assert server.worker_pids() == workers, "a worker was restarted"
    assert report.sent("order") > 20
    assert len(acknowledged) > 10
    missing = acknowledged - shop.orders_found(acknowledged)
    assert not missing, f"acknowledged with 201 but not in the database: {sorted(missing)}"
