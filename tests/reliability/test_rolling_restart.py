"""Rolling restart behind the repository's Nginx."""

from __future__ import annotations

import asyncio
import time

from tests.reliability.conftest import Figures
from tests.reliability.load import GetJson, LoadGenerator, Operation, PlaceOrder, retry_orders
from tests.reliability.support import GRACEFUL_TIMEOUT, ProxiedShop, retried

#: Load before the first restart and after the last one.
SETTLE_SECONDS = 2.0
#: Nginx takes a server it saw failing (max_fails=3) out of rotation for fail_timeout=10s.
BACK_IN_ROTATION_TIMEOUT = 20.0
MAX_LOAD_SECONDS = 60.0


async def test_rolling_restart_loses_no_request(
    proxied_shop: ProxiedShop, figures: Figures
) -> None:
    """Claim: two app servers behind Nginx under continuous load (product GETs and order
    POSTs with Idempotency-Keys) are restarted one after the other (SIGTERM, wait for the
    exit, start, wait until ready and back in Nginx's rotation before the next), and not one
    request fails; every acknowledged order exists exactly once."""
    shop, proxy = proxied_shop.shop, proxied_shop.proxy
    reads: list[Operation] = [GetJson("product", shop.product_paths()) for _ in range(5)]
    writes: list[Operation] = [PlaceOrder(buyer.token, buyer.product_id) for buyer in shop.buyers]
    orders_before = shop.count_orders()
    timeline: list[str] = []

    async with LoadGenerator(
        proxy.base_url,
        [[op] for op in [*reads, *writes]],
        verify=proxy.ssl_context(),
        max_seconds=MAX_LOAD_SECONDS,
    ) as load:
        await asyncio.sleep(SETTLE_SECONDS)
        assert load.report.sent("product"), "no load"
        assert load.report.sent("order"), "no load"
        for server in proxied_shop.servers:
            old_pid = server.pid
            in_flight = len(load.in_flight_now("order")) + len(load.in_flight_now("product"))
            code, drained = await asyncio.to_thread(server.terminate)
            assert code == 0, f"{server.name} exited {code}:\n{server.log_tail()}"
            started = time.monotonic()
            since = len(proxy.log.refresh())
            await asyncio.to_thread(server.start, all_workers=False)
            ready = time.monotonic() - started
            in_rotation = await proxy.wait_until_serving(server, since, BACK_IN_ROTATION_TIMEOUT)
            assert server.pid != old_pid
            timeline.append(
                f"{server.name}: {in_flight} in flight at SIGTERM, exit after {drained:.2f}s, "
                f"ready {ready:.2f}s after start, in rotation {in_rotation:.2f}s later"
            )
            assert load.running, "the load stopped before the restarts were done"
        await asyncio.sleep(SETTLE_SECONDS)
    report = load.report

    # Had any order failed, it would be retried with its own key; no duplicate may result.
    retries = await retry_orders(
        proxy.base_url, report.failures("order"), verify=proxy.ssl_context()
    )
    acknowledged = report.created_order_ids() | {a.order_id for a in retries if a.order_id}
    orders_after = shop.count_orders()
    nginx_retries = sum(1 for line in proxy.log.refresh() if retried(line))
    figures(
        "rolling restart",
        load_seconds=load.stopped_at - load.started_at,
        requests=report.sent(),
        gets=report.sent("product"),
        posts=report.sent("order"),
        failed=len(report.failures()),
        p99_s=report.quantile(0.99),
        max_s=report.quantile(1.0),
        nginx_retried_to_other_server=nginx_retries,
        graceful_timeout_s=GRACEFUL_TIMEOUT,
    )
    for line in timeline:
        figures("rolling restart step", detail=line)

    assert report.failures() == [], report.failure_lines()
    assert all(a.ok for a in retries), [a.describe() for a in retries]
    assert report.sent("product") > 100
    assert report.sent("order") > 100
    assert orders_after - orders_before == len(acknowledged), "an order was duplicated or lost"
    assert shop.orders_found(acknowledged) == acknowledged
