"""Prometheus metrics in one process: RED metrics by route template, bounded cardinality,
the hooks other modules call, the DB pool, /metrics exposure (public, token, IP allowlist,
separate port) and the multiprocess-directory bookkeeping.

The registry is process-wide, so every assertion compares a scrape before and after."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from slipway.app import create_app
from slipway.catalog.models import Product
from slipway.platform.metrics import hooks, instruments, multiprocess
from slipway.platform.settings import Settings, UnsafeSettingsError
from tests.conftest import TEST_SECRET, make_settings
from tests.support.ports import LOOPBACK, free_port

pytestmark = pytest.mark.timeout(120)

ITEMS_ROUTE = "/_test/observability/items/{item_id}"
PRODUCT_ROUTE = "/api/v1/products/{product_id}"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """{(sample name, sorted labels): value} of one exposition body."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: Samples, name: str, **match: str) -> set[tuple[tuple[str, str], ...]]:
    return {
        labels
        for (sample, labels), _ in samples.items()
        if sample == name and all((k, v) in labels for k, v in match.items())
    }


@asynccontextmanager
async def serve(
    settings: Settings, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=client),
            base_url="http://testserver",
        ) as http,
    ):
        yield app, http


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def scrape_until(
    http: httpx.AsyncClient, name: str, timeout: float = 10.0, **labels: str
) -> Samples:
    """Scrape until `name` is present: the lifespan's first refresh runs in the background."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(http)
        if series(samples, name, **labels):
            return samples
        assert asyncio.get_running_loop().time() < deadline, f"{name} never appeared"
        await asyncio.sleep(0.05)


# --- RED metrics ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)

    for item in (1, 2, 3):
        assert (await client.get(f"/_test/observability/items/{item}")).status_code == 200
    assert (await client.get("/_test/observability/boom")).status_code == 500
    assert (await client.get("/no/such/path/42")).status_code == 404
    assert (await client.request("BREW", "/_test/observability/pid")).status_code == 405
    response = await client.get("/metrics")
    after = parse(response.text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("http_requests_total", method="GET", route=ITEMS_ROUTE, status="200") == 3
    assert (
        delta("http_requests_total", method="GET", route="/_test/observability/boom", status="500")
        == 1
    )
    assert delta("http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    # Unknown methods share one label value: a client cannot mint series.
    assert (
        delta("http_requests_total", method="OTHER", route="/_test/observability/pid", status="405")
        == 1
    )
    assert delta("http_request_duration_seconds_count", method="GET", route=ITEMS_ROUTE) == 3
    # Raw paths never become labels.
    assert "/_test/observability/items/1" not in response.text
    assert "/no/such/path" not in response.text


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_probes_and_scrapes_carry_their_own_route_labels(client: httpx.AsyncClient) -> None:
    """The alert rules leave out `route=~"/health.*|/metrics"`: those requests must carry
    exactly these labels (the liveness probes and /metrics are plain Starlette routes)."""
    before = await scrape(client)
    for path in ("/health/live", "/health", "/health/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200
    after = await scrape(client)

    for route in ("/health/live", "/health", "/health/ready", "/metrics"):
        labels = {"method": "GET", "route": route, "status": "200"}
        assert (
            value(after, "http_requests_total", **labels)
            - value(before, "http_requests_total", **labels)
            >= 1
        ), route


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_duration_buckets_span_5ms_to_10s_and_include_the_slo_threshold(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/_test/observability/items/1")
    samples = await scrape(client)

    bounds = {
        dict(labels)["le"]
        for labels in series(samples, "http_request_duration_seconds_bucket", route=ITEMS_ROUTE)
    }
    assert {"0.005", "0.5", "10.0", "+Inf"} <= bounds
    finite = sorted(float(b) for b in bounds if b != "+Inf")
    assert finite[0] == 0.005
    assert finite[-1] == 10.0
    assert tuple(finite) == instruments.HTTP_BUCKETS


async def test_in_flight_gauge_counts_requests_being_handled(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with serve(settings) as (_, http):
        idle = value(await scrape(http), "http_requests_in_flight")
        slow = asyncio.create_task(http.get("/_test/cache/slow-inflight?delay_ms=800"))
        await asyncio.sleep(0.3)
        busy = value(await scrape(http), "http_requests_in_flight")
        assert (await slow).status_code == 200
        done = value(await scrape(http), "http_requests_in_flight")

    # The scrape itself is in flight while it renders.
    assert busy == idle + 1
    assert done == idle


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "settings_overrides", [{"rate_limit_default": "100000/minute"}], indirect=False
)
async def test_a_thousand_product_ids_add_no_series(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with app.state.services.session_factory() as session, session.begin():
        session.add(Product(sku="SKU-1", name="Tea", price_minor=450, currency="EUR", stock=3))
    # The template's series, and the scrape's own, exist from here on.
    await client.get("/api/v1/products/1")
    await scrape(client)
    before = await scrape(client)

    statuses = set()
    for product_id in range(1, 1001):
        response = await client.get(f"/api/v1/products/{product_id}")
        statuses.add(response.status_code)
    response = await client.get("/metrics")
    after = parse(response.text)

    assert statuses == {200, 404}
    added = set(after) - set(before)
    # Only the 404 status of the same template may appear; no label carries an id.
    assert {(name, labels) for name, labels in added if name.startswith("http_request")} <= {
        ("http_requests_total", (("method", "GET"), ("route", PRODUCT_ROUTE), ("status", "404")))
    }
    # The registry is process-wide (other tests' series stay), so check every route label:
    # none carries a raw id.
    routes = {dict(labels).get("route", "") for name, labels in after if name.startswith("http_")}
    assert not any(re.search(r"/\d+(/|$)", route) for route in routes), routes
    assert (
        value(after, "http_request_duration_seconds_count", method="GET", route=PRODUCT_ROUTE)
        - value(before, "http_request_duration_seconds_count", method="GET", route=PRODUCT_ROUTE)
        == 1000
    )
    assert "/api/v1/products/5" not in response.text


# --- hooks ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_hooks_show_up_in_the_scrape(client: httpx.AsyncClient) -> None:
    before = await scrape(client)

    hooks.record_cache(hit=True, namespace="hooktest")
    hooks.record_cache(hit=False, namespace="hooktest")
    hooks.record_cache(hit=False, namespace="hooktest")
    hooks.record_cache_error()
    hooks.record_rate_limited("hooktest")
    hooks.record_job("enqueued", kind="hooktest")
    hooks.record_job("started", kind="hooktest", duration=0.2)
    hooks.record_job("retried", kind="hooktest", duration=0.1)
    hooks.record_job("succeeded", kind="hooktest", duration=1.5)
    hooks.record_job("failed", kind="hooktest", duration=3.0)
    hooks.ws_connected()
    hooks.ws_connected()
    hooks.ws_disconnected()
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cache_hits_total", namespace="hooktest") == 1
    assert delta("cache_misses_total", namespace="hooktest") == 2
    assert delta("cache_errors_total") == 1
    assert delta("rate_limit_rejections_total", policy="hooktest") == 1
    for event in hooks.JOB_EVENTS:
        assert delta(f"jobs_{event}_total", kind="hooktest") == 1, event
    assert delta("job_queue_wait_seconds_count", kind="hooktest") == 1
    assert delta("job_queue_wait_seconds_sum", kind="hooktest") == pytest.approx(0.2)
    # Run time is observed for each finished attempt: retried, succeeded, failed.
    assert delta("job_run_duration_seconds_count", kind="hooktest") == 3
    assert delta("job_run_duration_seconds_sum", kind="hooktest") == pytest.approx(4.6)
    assert delta("websocket_connections") == 1


def test_label_values_are_bounded_per_metric() -> None:
    counter = Counter("bounded_test_total", "test", ["kind"], registry=CollectorRegistry())
    children = hooks._Children(counter)

    for index in range(hooks.MAX_LABEL_VALUES + 50):
        children.get(f"kind-{index}").inc()

    kinds = {sample.labels["kind"] for metric in counter.collect() for sample in metric.samples}
    assert len(kinds) == hooks.MAX_LABEL_VALUES + 1
    assert hooks.OVERFLOW_LABEL in kinds
    overflow = counter.labels(hooks.OVERFLOW_LABEL)._value.get()
    assert overflow == 50


async def test_cache_and_rate_limit_modules_report_through_the_hooks(
    tmp_path: Path,
) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        rate_limit_policies={"testing": "2/minute"},
    )
    async with serve(settings) as (_, http):
        before = await scrape(http)
        first = await http.get("/_test/cache/metrics-probe")
        second = await http.get("/_test/cache/metrics-probe")
        limited = [(await http.get("/_test/limited")).status_code for _ in range(4)]
        after = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert delta("cache_misses_total", namespace="testing") == 1
    assert delta("cache_hits_total", namespace="testing") == 1
    assert limited == [200, 200, 429, 429]
    assert delta("rate_limit_rejections_total", policy="testing") == 2


# --- build, worker, readiness, pool --------------------------------------------------------


async def test_build_info_worker_start_readiness_and_pool(database_url: str, backend: str) -> None:
    settings = make_settings(database_url=database_url, git_sha="abc1234", db_pool_size=7)
    before_starts: float | None = None
    async with serve(settings) as (_, http):
        samples = await scrape_until(http, "health_ready")
        before_starts = value(samples, "worker_starts_total")
        for item in range(5):
            assert (await http.get(f"/_test/observability/items/{item}")).status_code == 200
        after = await scrape(http)

    version = settings.app_version
    assert value(samples, "slipway_build_info", version=version, git_sha="abc1234") == 1
    assert before_starts >= 1
    assert value(samples, "health_ready") == 1
    assert value(after, "db_pool_wait_seconds_count") > value(samples, "db_pool_wait_seconds_count")
    assert value(after, "db_pool_checked_out") == 0  # every connection went back
    if backend == "postgresql":
        assert value(after, "db_pool_size") == 7
        assert value(after, "db_pool_overflow") <= 0


async def test_readiness_gauge_drops_when_the_database_fails(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "db.sqlite"
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{missing}")
    async with serve(settings) as (_, http):
        samples = await scrape_until(http, "health_ready")
    assert value(samples, "health_ready") == 0


# --- exposure -------------------------------------------------------------------------------


async def test_token_exposure_requires_the_bearer_token(tmp_path: Path) -> None:
    token = "metrics-token-" + "t" * 24
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        metrics_exposure="token",
        metrics_token=token,
    )
    async with serve(settings) as (_, http):
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})

    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "not_authenticated"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "http_requests_total" in right.text
    assert token not in right.text


async def test_ip_allowlist_judges_the_resolved_client_not_the_proxy(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        metrics_exposure="ip_allowlist",
        metrics_allow_ips=["127.0.0.0/8", "10.0.0.0/8"],
        forwarded_allow_ips=["127.0.0.1"],
    )
    async with serve(settings) as (_, local):
        direct = await local.get("/metrics")
        # Nginx on 127.0.0.1 relays a request from a public client: refused.
        relayed = await local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        internal = await local.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"})
    async with serve(settings, client=("198.51.100.7", 40000)) as (_, outside):
        public = await outside.get("/metrics")

    assert direct.status_code == 200
    assert relayed.status_code == 403
    assert relayed.json()["error"]["code"] == "forbidden"
    assert internal.status_code == 200
    assert public.status_code == 403


async def test_port_exposure_serves_metrics_only_on_their_own_port(tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        metrics_exposure="port",
        metrics_port=port,
        metrics_host=LOOPBACK,
    )
    async with serve(settings) as (_, http):
        on_app = await http.get("/metrics")
        await http.get("/_test/observability/pid")
        async with httpx.AsyncClient() as outside:
            own = await outside.get(f"http://{LOOPBACK}:{port}/metrics")
    async with httpx.AsyncClient() as outside:
        with pytest.raises(httpx.ConnectError):
            await outside.get(f"http://{LOOPBACK}:{port}/metrics")

    assert on_app.status_code == 404
    assert own.status_code == 200
    assert (
        value(
            parse(own.text),
            "http_requests_total",
            method="GET",
            route="/_test/observability/pid",
            status="200",
        )
        >= 1
    )


async def test_metrics_are_neither_access_logged_nor_rate_limited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
        rate_limit_default="2/minute",
        rate_limit_paths=["/"],
    )
    async with serve(settings) as (_, http):
        capsys.readouterr()
        statuses = [(await http.get("/metrics")).status_code for _ in range(6)]
        pid_statuses = [(await http.get("/_test/observability/pid")).status_code for _ in range(3)]
        output = capsys.readouterr().out

    assert statuses == [200] * 6
    assert pid_statuses == [200, 200, 429]  # the limit is real for other paths
    request_lines = [line for line in output.splitlines() if '"event":"request"' in line]
    assert request_lines, output
    assert not [line for line in request_lines if '"/metrics"' in line]


def test_metrics_are_never_public_in_production() -> None:
    production: dict[str, Any] = {
        "environment": "production",
        "secret_key": TEST_SECRET,
        "database_url": "postgresql+asyncpg://app@db/app",
        "redis_url": "redis://redis:6379/0",
    }
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, metrics_exposure="public", **production)  # type: ignore[call-arg]
    unsafe = refused.value.errors()[0]["ctx"]["error"]
    assert isinstance(unsafe, UnsafeSettingsError)
    assert any("METRICS_EXPOSURE=public" in problem for problem in unsafe.problems)

    auto = Settings(_env_file=None, **production)  # type: ignore[call-arg]
    assert auto.metrics_exposure_mode == "ip_allowlist"
    with_token = Settings(_env_file=None, metrics_token="x" * 32, **production)  # type: ignore[call-arg]
    assert with_token.metrics_exposure_mode == "token"
    assert make_settings().metrics_exposure_mode == "public"  # testing

    with pytest.raises(ValidationError, match="METRICS_TOKEN"):
        make_settings(metrics_exposure="token")
    with pytest.raises(ValidationError):
        make_settings(metrics_allow_ips=["10.0.0.0/33"])


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", metrics_enabled=False
    )
    async with serve(settings) as (_, http):
        assert (await http.get("/metrics")).status_code == 404


# --- multiprocess bookkeeping ----------------------------------------------------------------


def test_prepare_empties_the_directory_and_exports_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(multiprocess.MULTIPROC_ENV, raising=False)
    assert multiprocess.prepare_multiprocess_dir() is None

    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old")
    (directory / "gauge_livesum_123.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("not ours")

    prepared = multiprocess.prepare_multiprocess_dir(directory)

    assert prepared == directory
    assert os.environ[multiprocess.MULTIPROC_ENV] == str(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    created = multiprocess.prepare_multiprocess_dir(tmp_path / "new" / "dir")
    assert created is not None
    assert created.is_dir()


def test_dead_processes_lose_their_live_gauges_but_keep_their_counts(tmp_path: Path) -> None:
    """In a child process (multiprocess mode is chosen at import): a worker that exited
    without any hook is reaped by the next scrape; its counter survives."""
    script = f"""
import os, subprocess, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from slipway.platform.metrics import instruments, hooks
from slipway.platform.metrics.multiprocess import exposition_registry
from prometheus_client import generate_latest
child = subprocess.run([sys.executable, "-c", '''
import os
os.environ["PROMETHEUS_MULTIPROC_DIR"] = {str(tmp_path)!r}
from slipway.platform.metrics import instruments
instruments.HTTP_IN_FLIGHT.inc(5)
instruments.PROCESS_RESIDENT_MEMORY.set(123)
instruments.WORKER_STARTS.inc()
print(os.getpid())
'''], capture_output=True, text=True, check=True)
dead = int(child.stdout.strip())
instruments.WORKER_STARTS.inc()
instruments.PROCESS_RESIDENT_MEMORY.set(456)
body = generate_latest(exposition_registry()).decode()
print(dead, os.getpid())
print(body)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    pids, body = result.stdout.split("\n", 1)
    dead_pid, live_pid = pids.split()
    samples = parse(body)

    assert value(samples, "worker_starts_total") == 2
    assert value(samples, "http_requests_in_flight") == 0
    assert series(samples, "process_resident_memory_bytes") == {(("pid", live_pid),)}
    assert value(samples, "process_resident_memory_bytes", pid=live_pid) == 456
    assert not list(tmp_path.glob(f"gauge_live*_{dead_pid}.db"))
    assert list(tmp_path.glob(f"counter_{dead_pid}.db"))


def test_mark_process_dead_removes_only_live_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(multiprocess.MULTIPROC_ENV, str(tmp_path))
    for name in (
        "gauge_livesum_77.db",
        "gauge_liveall_77.db",
        "counter_77.db",
        "gauge_livesum_78.db",
    ):
        (tmp_path / name).write_bytes(b"")

    multiprocess.mark_process_dead(77)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_77.db", "gauge_livesum_78.db"]


# --- the contract with docs/operations/monitoring.md -------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations" / "monitoring.md"


def documented_metrics() -> set[str]:
    """The names in the first column of the "Metrics" table."""
    section = DOCS.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            names.update(re.findall(r"`([a-z_:]+)`", first_column))
    return names


async def test_exported_metrics_match_the_documented_table(tmp_path: Path) -> None:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with serve(settings) as (_, http):
        await http.get("/_test/observability/items/1")
        # Labelled series appear on first use.
        hooks.record_cache(hit=True, namespace="contract")
        hooks.record_cache(hit=False, namespace="contract")
        hooks.record_rate_limited("contract")
        for event in hooks.JOB_EVENTS:
            hooks.record_job(event, kind="contract", duration=0.1)
        await scrape_until(http, "health_ready")
        response = await http.get("/metrics")

    exported = {
        family.name + "_total" if family.type == "counter" else family.name
        for family in text_string_to_metric_families(response.text)
    }
    documented = documented_metrics()
    assert "http_requests_total" in documented  # the table was found
    assert documented <= exported, documented - exported
    ours = {name for name in exported if not name.startswith(("python_", "process_"))}
    assert ours <= documented, ours - documented
