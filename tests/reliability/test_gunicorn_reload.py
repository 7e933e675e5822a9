"""Gunicorn reload (SIGHUP) under load, behind the repository's Nginx."""

from __future__ import annotations

import asyncio
import signal
import time

from tests.reliability.conftest import Figures
from tests.reliability.load import GetJson, LoadGenerator, PlaceOrder
from tests.reliability.support import START_TIMEOUT, WORKERS, ProxiedShop

SETTLE_SECONDS = 2.0
MAX_LOAD_SECONDS = 60.0


async def test_sighup_replaces_workers_without_a_failed_request(
    proxied_shop: ProxiedShop, figures: Figures
) -> None:
    """Claim: SIGHUP to a gunicorn master, while GETs and order POSTs flow through Nginx,
    replaces every worker of that master (the master itself stays), and not one request
    fails."""
    shop, proxy = proxied_shop.shop, proxied_shop.proxy
    server = proxied_shop.servers[0]
    master = server.pid
    old_workers = server.worker_pids()
    assert len(old_workers) == WORKERS
    orders_before = shop.count_orders()

    async with LoadGenerator(
        proxy.base_url,
        [[GetJson("product", shop.product_paths())] for _ in range(5)]
        + [[PlaceOrder(buyer.token, buyer.product_id)] for buyer in shop.buyers],
        verify=proxy.ssl_context(),
        max_seconds=MAX_LOAD_SECONDS,
        first_address=40,
    ) as load:
        await asyncio.sleep(SETTLE_SECONDS)
        signalled = time.monotonic()
        server.send_signal(signal.SIGHUP)

        def replaced() -> set[int]:
            server.wait_until(
                lambda: not old_workers & server.worker_pids(),
                what="old workers exit",
                timeout=START_TIMEOUT,
            )
            return server.wait_for_workers()

        new_workers = await asyncio.to_thread(replaced)
        reloaded = time.monotonic() - signalled
        assert load.running, "the load stopped before the reload was done"
        await asyncio.sleep(SETTLE_SECONDS)
    report = load.report

    figures(
        "gunicorn reload",
        requests=report.sent(),
        gets=report.sent("product"),
        posts=report.sent("order"),
        failed=len(report.failures()),
        workers_replaced_and_serving_after_s=reloaded,
        p99_s=report.quantile(0.99),
        max_s=report.quantile(1.0),
    )
    assert report.failures() == [], report.failure_lines()
    assert report.sent("product") > 50
    assert report.sent("order") > 50
    assert server.pid == master
    assert server.is_running()
    assert new_workers.isdisjoint(old_workers)
    assert len(new_workers) == WORKERS
    assert shop.count_orders() - orders_before == len(report.created_order_ids())
