"""A gunicorn worker killed with SIGKILL under load, behind the repository's Nginx."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.reliability.conftest import Figures
from tests.reliability.load import GetJson, LoadGenerator, PlaceOrder, retry_orders
from tests.reliability.support import START_TIMEOUT, WORKERS, ProxiedShop, retried

SETTLE_SECONDS = 2.0
MAX_LOAD_SECONDS = 60.0
RESPAWN_LIMIT_SECONDS = 2.0
SLOW_GET = "/_test/slow?ms=300"


async def test_killed_worker_is_respawned_and_no_get_fails(
    proxied_shop: ProxiedShop, figures: Figures
) -> None:
    """Claim: when one gunicorn worker is SIGKILLed under load, its master forks a
    replacement within 2 s; no GET fails through Nginx (it retries them on the other
    server); the orders that fail are at most those in flight at the kill, and sending them
    again with their Idempotency-Keys creates no duplicate order."""
    shop, proxy = proxied_shop.shop, proxied_shop.proxy
    server = proxied_shop.servers[0]
    master = server.pid
    workers = server.worker_pids()
    victim = min(workers)
    orders_before = shop.count_orders()

    async with LoadGenerator(
        proxy.base_url,
        [[GetJson("product", shop.product_paths())] for _ in range(5)]
        # GETs that take 300 ms: some are surely in flight on the killed worker.
        + [[GetJson("slow get", [SLOW_GET])] for _ in range(4)]
        + [[PlaceOrder(buyer.token, buyer.product_id)] for buyer in shop.buyers],
        verify=proxy.ssl_context(),
        max_seconds=MAX_LOAD_SECONDS,
        first_address=70,
    ) as load:
        await asyncio.sleep(SETTLE_SECONDS)
        # No await between the snapshot and the kill: the generator's view cannot change.
        orders_in_flight = len(load.in_flight_now("order"))
        gets_in_flight = len(load.in_flight_now("product")) + len(load.in_flight_now("slow get"))
        log_index = len(proxy.log.refresh())
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def respawned() -> tuple[float, float]:
            server.wait_until(
                lambda: len(server.worker_pids() - workers) == 1,
                what="a replacement worker",
                timeout=START_TIMEOUT,
            )
            forked = time.monotonic() - killed_at
            server.wait_for_workers()
            return forked, time.monotonic() - killed_at

        forked_after, serving_after = await asyncio.to_thread(respawned)
        assert load.running, "the load stopped before the worker was back"
        await asyncio.sleep(SETTLE_SECONDS)
    report = load.report

    failed_orders = report.failures("order")
    retries = await retry_orders(proxy.base_url, failed_orders, verify=proxy.ssl_context())
    acknowledged = report.created_order_ids() | {a.order_id for a in retries if a.order_id}
    replayed = sum(1 for a in retries if a.headers.get("idempotent-replayed") == "true")
    figures(
        "worker crash",
        requests=report.sent(),
        gets=report.sent("product"),
        posts=report.sent("order"),
        slow_gets=report.sent("slow get"),
        failed_gets=len(report.failures("product")) + len(report.failures("slow get")),
        failed_posts=len(failed_orders),
        failed_posts_sent_after_kill=sum(1 for a in failed_orders if a.started > killed_at),
        posts_in_flight_at_kill=orders_in_flight,
        gets_in_flight_at_kill=gets_in_flight,
        retried_posts_replayed=replayed,
        nginx_retried_to_other_server=sum(map(retried, proxy.log.refresh()[log_index:])),
        respawned_after_s=forked_after,
        replacement_serving_after_s=serving_after,
    )

    assert report.failures("product") == [], report.failure_lines()
    assert report.failures("slow get") == [], report.failure_lines()
    assert len(failed_orders) <= orders_in_flight, report.failure_lines()
    assert all(a.ok for a in retries), [a.describe() for a in retries]
    assert forked_after <= RESPAWN_LIMIT_SECONDS
    assert server.pid == master
    assert victim not in server.worker_pids()
    assert len(server.worker_pids()) == WORKERS
    # One order per acknowledged key: a retried order that had in fact been committed was
    # replayed, not placed twice.
    assert shop.count_orders() - orders_before == len(acknowledged)
    assert shop.orders_found(acknowledged) == acknowledged
