"""Sales reports: 202 + job id + Location, status, the CSV built by the background job
(embedded runner here; the Celery worker in tests/integration/test_report_worker.py),
stored through the storage interface and streamed back. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert

from slipway.orders.models import Order
from slipway.platform.jobs.models import Job
from slipway.reports.csv_export import HEADER
from slipway.reports.tasks import SALES_REPORT, report_key
from tests.factories import customer, session_factory, staff

REPORTS = "/api/v1/reports"


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {
        "rate_limit_enabled": False,
        "jobs_backend": "embedded",
        "storage_backend": "local",
        "storage_local_dir": tmp_path / "storage",
    }


async def wait_for_report(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def insert_orders(app: FastAPI, user_id: uuid.UUID, moments: list[datetime]) -> list[str]:
    rows = [
        {
            "id": uuid.uuid4(),
            "user_id": user_id,
            "status": ("pending", "paid", "shipped", "cancelled")[n % 4],
            "total_minor": 100 * (n + 1),
            "currency": "USD",
            "created_at": moment,
            "updated_at": moment,
        }
        for n, moment in enumerate(moments)
    ]
    async with session_factory(app)() as session, session.begin():
        await session.execute(insert(Order), rows)
    return [str(row["id"]) for row in rows]


async def test_sales_report_end_to_end(
    client: httpx.AsyncClient, app: FastAPI, tmp_path: Path
) -> None:
    admin = await staff(client, app)
    buyer = await customer(client, app)
    day = datetime(2026, 3, 10, tzinfo=UTC)
    inside = await insert_orders(
        app,
        buyer.id,
        [day, day + timedelta(hours=12), day + timedelta(days=2, hours=23, minutes=59, seconds=59)]
        + [day + timedelta(days=1, minutes=n) for n in range(40)],
    )
    outside = await insert_orders(
        app, buyer.id, [day - timedelta(microseconds=1), day + timedelta(days=3)]
    )

    accepted = await client.post(
        f"{REPORTS}/sales", json={"start": "2026-03-10", "end": "2026-03-12"}, headers=admin.headers
    )

    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert body["status"] == "queued"
    uuid.UUID(body["id"])
    assert accepted.headers["location"] == body["status_url"]
    assert body["status_url"].endswith(f"{REPORTS}/{body['id']}")

    report = await wait_for_report(client, accepted.headers["location"], admin.headers)
    assert report["status"] == "succeeded", report
    assert (report["start"], report["end"]) == ("2026-03-10", "2026-03-12")
    assert report["rows"] == len(inside)
    assert report["download_url"].endswith(f"{REPORTS}/{body['id']}/download")
    assert report["error"] is None
    assert report["finished_at"] is not None

    download = await client.get(report["download_url"], headers=admin.headers)
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == (
        'attachment; filename="sales-2026-03-10-2026-03-12.csv"'
    )
    assert len(download.content) == report["size_bytes"]
    rows = list(csv.reader(io.StringIO(download.text)))
    assert tuple(rows[0]) == HEADER
    assert sorted(row[0] for row in rows[1:]) == sorted(inside)
    assert not {row[0] for row in rows[1:]} & set(outside)
    assert {row[2] for row in rows[1:]} == {str(buyer.id)}
    assert [row[1] for row in rows[1:]] == sorted(row[1] for row in rows[1:])  # by time

    # The file went through the storage interface (a local directory here).
    stored = tmp_path / "storage" / report_key(body["id"])
    assert stored.read_bytes() == download.content


async def test_reports_are_staff_only_and_validated(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    buyer = await customer(client, app)
    body = {"start": "2026-01-01", "end": "2026-01-31"}
    assert (await client.post(f"{REPORTS}/sales", json=body)).status_code == 401
    forbidden = await client.post(f"{REPORTS}/sales", json=body, headers=buyer.headers)
    assert forbidden.status_code == 403
    for bad in (
        {"start": "2026-02-01", "end": "2026-01-01"},
        {"start": "2024-01-01", "end": "2026-01-01"},
        {"start": "yesterday", "end": "2026-01-01"},
        {"start": "2026-01-01"},
        {**body, "format": "xlsx"},
    ):
        response = await client.post(f"{REPORTS}/sales", json=bad, headers=admin.headers)
        assert response.status_code == 422, (bad, response.text)

    accepted = await client.post(f"{REPORTS}/sales", json=body, headers=admin.headers)
    report_url = accepted.headers["location"]
    assert (await client.get(report_url, headers=buyer.headers)).status_code == 403
    assert (await client.get(f"{report_url}/download", headers=buyer.headers)).status_code == 403
    assert (await client.get(f"{REPORTS}/{uuid.uuid4()}", headers=admin.headers)).status_code == 404
    # Only UUIDs match the report routes: anything else is no such resource.
    assert (await client.get(f"{REPORTS}/nope", headers=admin.headers)).status_code == 404
    empty = await wait_for_report(client, report_url, admin.headers)
    assert (empty["status"], empty["rows"]) == ("succeeded", 0)
    content = (await client.get(f"{report_url}/download", headers=admin.headers)).text
    assert content.splitlines() == [",".join(HEADER)]


async def test_download_before_the_report_is_ready_is_409(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    admin = await staff(client, app)
    queued = uuid.uuid4()
    other_kind = uuid.uuid4()
    async with session_factory(app)() as session, session.begin():
        session.add(Job(id=queued, kind=SALES_REPORT, status="queued",
                        payload={"start": "2026-01-01", "end": "2026-01-02"}))  # fmt: skip
        session.add(Job(id=other_kind, kind="mail.send", status="succeeded", payload={}))
    status = await client.get(f"{REPORTS}/{queued}", headers=admin.headers)
    assert (status.json()["status"], status.json()["download_url"]) == ("queued", None)
    early = await client.get(f"{REPORTS}/{queued}/download", headers=admin.headers)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "report_not_ready"
    # Job ids of other kinds are not reports.
    assert (await client.get(f"{REPORTS}/{other_kind}", headers=admin.headers)).status_code == 404
    response = await client.get(f"{REPORTS}/{other_kind}/download", headers=admin.headers)
    assert response.status_code == 404
