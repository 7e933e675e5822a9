"""A sales report over 100k orders, built by the embedded runner inside a real app process
and by a real Celery worker (`slipway worker`): the CSV's rows match the database, the
download streams, and the building process's peak RSS grows by less than 50 MB.

Memory is read from /proc: VmHWM (peak RSS) is reset through /proc/<pid>/clear_refs right
before the report is requested, after a warm-up report loaded every module and pool.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from slipway.identity.models import User
from slipway.orders.models import Order
from slipway.reports.csv_export import HEADER
from slipway.seeding import seed
from tests.conftest import TEST_SECRET
from tests.factories import PASSWORD, password_hash, start_app_instance, user_row
from tests.integration.conftest import SLIPWAY, slipway_env
from tests.support.services import ManagedProcess, PostgresService, RedisService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

ORDERS = 100_000
#: Every seeded order is created in 2026 (one a minute from January 1st).
FULL_RANGE = {"start": "2026-01-01", "end": "2026-12-31"}
EMPTY_RANGE = {"start": "2020-01-01", "end": "2020-01-01"}
MAX_GROWTH_MB = 50
MIB = 1024 * 1024


@dataclass
class ReportsDatabase:
    url: str
    staff_email: str
    order_ids_digest: str


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


async def _prepare(url: str, staff: dict[str, Any]) -> str:
    engine = create_async_engine(url)
    try:
        await seed(
            engine, seed_value=42, users=50, products=500, orders=ORDERS,
            password_hash=password_hash(),
        )  # fmt: skip
        async with engine.begin() as conn:
            await conn.execute(insert(User), [staff])
        async with engine.connect() as conn:
            ids = (await conn.execute(select(Order.id))).scalars().all()
        assert len(ids) == ORDERS
        return _digest([str(i) for i in ids])
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def reports_db(postgres_server: PostgresService, pg_template: str) -> Iterator[ReportsDatabase]:
    """One database with 100k seeded orders for both tests (seeding is the slow part)."""
    name = f"reports_{uuid.uuid4().hex[:10]}"
    url = postgres_server.create_database(name, template=pg_template)
    staff = user_row(role="staff")
    try:
        digest = asyncio.run(_prepare(url, staff))
        yield ReportsDatabase(url, staff["email"], digest)
    finally:
        postgres_server.drop_database(name)


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def reset_peak(pid: int) -> None:
    # "5" resets the peak resident set size (VmHWM) to the current RSS (Linux >= 4.0).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def request_and_wait(
    http: httpx.AsyncClient, base: str, token: str, body: dict[str, str], timeout: float = 180
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    accepted = await http.post(f"{base}/api/v1/reports/sales", json=body, headers=headers)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + timeout
    while True:
        report = await http.get(accepted.headers["location"], headers=headers)
        assert report.status_code == 200, report.text
        status: dict[str, Any] = report.json()
        if status["status"] in ("succeeded", "failed"):
            assert status["status"] == "succeeded", status
            return status
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.25)


@dataclass
class Built:
    report: dict[str, Any]
    growth_mb: float
    peak_mb: float
    seconds: float


async def build_full_report(base: str, email: str, builder_pid: int) -> Built:
    async with httpx.AsyncClient(timeout=60) as http:
        login = await http.post(
            f"{base}/api/v1/auth/login", data={"username": email, "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        # Warm-up: the first job opens pools and imports what a job needs.
        await request_and_wait(http, base, token, EMPTY_RANGE)
        await asyncio.sleep(0.5)
        before = memory_kib(builder_pid)["VmRSS"]
        reset_peak(builder_pid)
        started = time.monotonic()
        report = await request_and_wait(http, base, token, FULL_RANGE)
        seconds = time.monotonic() - started
        peak = memory_kib(builder_pid)["VmHWM"]
        return Built(report, (peak - before) / 1024, peak / 1024, seconds)


async def download_rows(base: str, email: str, url: str) -> tuple[list[str], str]:
    """Stream the CSV; returns (order ids, transfer-encoding)."""
    async with httpx.AsyncClient(timeout=60) as http:
        login = await http.post(
            f"{base}/api/v1/auth/login", data={"username": email, "password": PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        ids: list[str] = []
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/csv; charset=utf-8"
            encoding = response.headers.get("transfer-encoding", "")
            chunks = 0
            pending = ""
            async for text in response.aiter_text():
                chunks += 1
                pending += text
                *complete, pending = pending.split("\r\n")
                ids += [line.split(",", 1)[0] for line in complete]
            assert pending == ""
            assert chunks > 1
        assert tuple(next(csv.reader(io.StringIO(ids[0])))) == HEADER[:1]
        return ids[1:], encoding


def check(built: Built, ids: list[str], encoding: str, db: ReportsDatabase) -> None:
    assert built.report["rows"] == ORDERS
    assert len(ids) == ORDERS
    assert _digest(ids) == db.order_ids_digest  # exactly the database's orders
    assert encoding == "chunked"  # streamed, not one buffered body
    assert built.growth_mb < MAX_GROWTH_MB, built
    # The figures for the record (visible with pytest -s).
    print(
        f"\nreport: {ORDERS} rows, {built.report['size_bytes'] / MIB:.1f} MiB CSV in "
        f"{built.seconds:.1f} s; peak RSS {built.peak_mb:.0f} MiB, growth "
        f"{built.growth_mb:.1f} MiB"
    )


def _env(db: ReportsDatabase, workdir: Path, **extra: str) -> dict[str, str]:
    values = {"LOG_LEVEL": "WARNING", **extra}
    return slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        DATABASE_URL=db.url,
        STORAGE_BACKEND="local",
        STORAGE_LOCAL_DIR=str(workdir / "storage"),
        RATE_LIMIT_ENABLED="false",
        **values,
    )


def test_report_over_100k_orders_with_the_embedded_runner(
    reports_db: ReportsDatabase, tmp_path: Path
) -> None:
    api = start_app_instance(_env(reports_db, tmp_path, JOBS_BACKEND="embedded"), tmp_path, "api")
    try:
        built = asyncio.run(build_full_report(api.url(""), reports_db.staff_email, api.process.pid))
        ids, encoding = asyncio.run(
            download_rows(api.url(""), reports_db.staff_email, built.report["download_url"])
        )
    finally:
        api.process.close()
    check(built, ids, encoding, reports_db)


@pytest.mark.redis
def test_report_over_100k_orders_with_a_celery_worker(
    reports_db: ReportsDatabase, redis_server: RedisService, tmp_path: Path
) -> None:
    env = _env(
        reports_db,
        tmp_path,
        JOBS_BACKEND="celery",
        LOG_LEVEL="INFO",  # the worker logs "ready" and each task at INFO
        REDIS_URL=redis_server.url(),
        # This test's queue and keys only: the session's Redis is shared.
        JOBS_QUEUE=f"slipway-reports-{uuid.uuid4().hex[:8]}",
        CACHE_PREFIX=f"slipway-reports-{uuid.uuid4().hex[:8]}",
    )
    # One process that runs the job itself (solo pool), so its RSS is the builder's.
    worker = ManagedProcess(
        [SLIPWAY, "worker", "--pool", "solo", "--concurrency", "1"],
        name="slipway-worker",
        env=env,
        inherit_env=False,
        cwd=tmp_path,
        log_path=tmp_path / "worker.log",
    ).start()
    api = None
    try:
        worker.wait_until(lambda: " ready." in worker.log_text(), what="worker ready", timeout=60)
        api = start_app_instance(env, tmp_path, "api")
        built = asyncio.run(build_full_report(api.url(""), reports_db.staff_email, worker.pid))
        assert f"slipway.job.reports.sales[{built.report['id']}]" in worker.log_text()
        ids, encoding = asyncio.run(
            download_rows(api.url(""), reports_db.staff_email, built.report["download_url"])
        )
    finally:
        if api is not None:
            api.process.close()
        worker.stop(timeout=20)
    check(built, ids, encoding, reports_db)
