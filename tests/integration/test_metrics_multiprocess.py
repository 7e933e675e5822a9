"""/metrics with several processes: under `slipway serve --workers 2` one scrape returns the
sum over both workers (prometheus_client multiprocess mode), and a worker that dies is
forgotten by the live gauges while its counts are kept; `slipway worker` serves the sum over
its Celery pool processes on its own port."""

from __future__ import annotations

import os
import signal
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import (
    SLIPWAY,
    SlipwayServer,
    run_slipway,
    slipway_env,
    start_server,
)
from tests.support.ports import LOOPBACK, free_port, wait_until
from tests.support.process import ManagedProcess
from tests.support.services import RedisService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PID_ROUTE = "/_test/observability/pid"
MAX_REQUESTS = 400


def scrape(server: SlipwayServer) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by name: [(labels, value), ...]."""
    response = httpx.get(server.url("/metrics"), timeout=10)
    assert response.status_code == 200, (response.text, server.process.log_tail(60))
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in samples if all(labels.get(k) == x for k, x in match.items()))


def pids_of(samples: list[tuple[dict[str, str], float]]) -> set[int]:
    return {int(labels["pid"]) for labels, _ in samples}


@pytest.fixture
def two_workers(tmp_path: Path, servers: list[SlipwayServer]) -> tuple[SlipwayServer, Path]:
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    # Left over from a "previous run": the server must empty the directory at start, or
    # the scrape would fail on (or add in) this file.
    (multiproc / "counter_999999.db").write_bytes(b"stale values from an earlier run")
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
    )
    server = start_server(tmp_path, env, args=["--workers", "2"])
    servers.append(server)
    return server, multiproc


def test_two_workers_are_summed_and_dead_workers_forgotten(
    two_workers: tuple[SlipwayServer, Path],
) -> None:
    server, multiproc = two_workers
    assert not (multiproc / "counter_999999.db").exists()

    # A new connection per request, so the kernel hands requests to both workers.
    served_by: list[int] = []
    while len(served_by) < 40 or len(set(served_by)) < 2:
        assert len(served_by) < MAX_REQUESTS, f"one worker answered everything: {served_by}"
        response = httpx.get(server.url(PID_ROUTE), timeout=10)
        assert response.status_code == 200
        served_by.append(response.json()["pid"])
    sent = len(served_by)
    workers = set(served_by)
    assert len(workers) == 2

    samples = scrape(server)
    # The counts of both processes, summed over every label, equal what was sent.
    assert total(samples["http_requests_total"], route=PID_ROUTE) == sent
    assert (
        total(samples["http_requests_total"])
        - total(samples["http_requests_total"], route="/health/live")
        - total(samples["http_requests_total"], route="/metrics")
        == sent
    )
    assert total(samples["http_request_duration_seconds_count"], route=PID_ROUTE) == sent
    assert total(samples["worker_starts_total"]) == 2
    # Gauges per live process carry its pid.
    wait_until(
        lambda: pids_of(scrape(server)["process_resident_memory_bytes"]) == workers,
        timeout=15,
        what="both workers report their memory",
    )
    assert total(samples["http_requests_in_flight"]) <= 1  # only the scrape itself

    # A worker dies; uvicorn's supervisor starts another one.
    victim = served_by[0]
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        current = scrape(server)
        return total(current["worker_starts_total"]) == 3 and victim not in pids_of(
            current["process_resident_memory_bytes"]
        )

    wait_until(replaced, timeout=60, what="the killed worker replaced and forgotten")
    after = scrape(server)
    # Its requests still count; its live gauges are gone, the newcomer's are there.
    assert total(after["http_requests_total"], route=PID_ROUTE) == sent
    memory_pids = pids_of(after["process_resident_memory_bytes"])
    assert victim not in memory_pids
    assert len(memory_pids) == 2
    assert victim not in pids_of(after["db_pool_checked_out"])


# --- the Celery worker ------------------------------------------------------------------------


def _create_testing_tables(database_url: str) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from slipway.platform.jobs.testing import create_testing_tables

    async def run() -> None:
        engine = create_async_engine(database_url)
        try:
            await create_testing_tables(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())


def scrape_port(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"http://{LOOPBACK}:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def test_celery_worker_serves_the_sum_over_its_pool_processes(
    tmp_path: Path, servers: list[SlipwayServer], redis_server: RedisService
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        DATABASE_URL=database_url,
        REDIS_URL=redis_server.url(),
        JOBS_BACKEND="celery",
        # A queue of our own on the session's shared Redis.
        JOBS_QUEUE=f"metrics-{uuid.uuid4().hex[:8]}",
        JOBS_RETRY_BACKOFF="1",
    )
    migrate = run_slipway(["migrate"], cwd=tmp_path, env=env)
    assert migrate.returncode == 0, migrate.stderr
    _create_testing_tables(database_url)
    server = start_server(tmp_path, env)
    servers.append(server)

    metrics_port = free_port()
    worker = ManagedProcess(
        [SLIPWAY, "worker", "--concurrency", "2"],
        name="slipway-worker",
        env={
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-prometheus"),
            "WORKER_METRICS_PORT": str(metrics_port),
            "WORKER_METRICS_HOST": LOOPBACK,
        },
        inherit_env=False,
        cwd=tmp_path,
        log_path=tmp_path / "worker.log",
    )
    with worker:
        worker.wait_for_http(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=60)
        kind = "testing.effect"
        payloads = [{"key": f"ok-{i}"} for i in range(3)] + [{"key": "flaky", "fail_times": 1}]
        for payload in payloads:
            response = httpx.post(
                server.url("/testing/jobs"), json={"kind": kind, "payload": payload}, timeout=10
            )
            assert response.status_code == 200, response.text

        def finished() -> bool:
            samples = scrape_port(metrics_port)
            return total(samples["jobs_succeeded_total"], kind=kind) == len(payloads)

        worker.wait_until(finished, what="every job succeeded", timeout=60)
        samples = scrape_port(metrics_port)

    assert total(samples["jobs_started_total"], kind=kind) == len(payloads) + 1
    assert total(samples["jobs_retried_total"], kind=kind) == 1
    assert total(samples["jobs_failed_total"], kind=kind) == 0
    assert total(samples["job_run_duration_seconds_count"], kind=kind) == len(payloads) + 1
    assert total(samples["job_queue_wait_seconds_count"], kind=kind) == len(payloads)
    # Both pool processes counted, each with its own memory series, in one scrape.
    assert total(samples["worker_starts_total"]) == 2
    assert len(pids_of(samples["process_resident_memory_bytes"])) == 2
    assert [labels for labels, _ in samples["slipway_build_info"]]
    # The API process counted the enqueues (after their transactions committed).
    assert total(scrape(server)["jobs_enqueued_total"], kind=kind) == len(payloads)


def test_separate_metrics_port_is_shared_by_every_worker(
    tmp_path: Path, servers: list[SlipwayServer]
) -> None:
    """METRICS_EXPOSURE=port with two workers: both bind the port (SO_REUSEPORT), and
    whichever answers a scrape gives the same complete sum."""
    metrics_port = free_port()
    env = slipway_env(
        ENVIRONMENT="testing",
        LOG_FORMAT="json",
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'port.db'}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        METRICS_EXPOSURE="port",
        METRICS_PORT=str(metrics_port),
        METRICS_HOST=LOOPBACK,
    )
    server = start_server(tmp_path, env, args=["--workers", "2"])
    servers.append(server)
    for _ in range(10):
        assert httpx.get(server.url(PID_ROUTE), timeout=10).status_code == 200

    assert httpx.get(server.url("/metrics"), timeout=10).status_code == 404
    wait_until(
        lambda: total(scrape_port(metrics_port)["worker_starts_total"]) == 2,
        timeout=30,
        what="both workers started",
    )
    totals = set()
    for _ in range(12):
        samples = scrape_port(metrics_port)
        totals.add(total(samples["http_requests_total"], route=PID_ROUTE))
    assert totals == {10}
