"""Background jobs in embedded mode (no broker), on SQLite and PostgreSQL: the state a
client reads from GET /api/v1/jobs/{id}, retries, idempotency, after-commit sending,
ownership, draining at shutdown and the purge. Celery is exercised in
tests/integration/test_celery_worker.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy import func, select

from slipway.app import create_app
from slipway.platform.db.base import utcnow
from slipway.platform.db.session import run_after_commit
from slipway.platform.jobs.celery_app import PURGE_TASK, celery_config, create_celery_app
from slipway.platform.jobs.execute import JobOutcome, execute_job
from slipway.platform.jobs.models import Job
from slipway.platform.jobs.purge import run_purges
from slipway.platform.jobs.testing import create_testing_tables, testing_job_effects
from slipway.platform.services import Services
from slipway.platform.settings import Settings, UnsafeSettingsError
from tests.conftest import make_settings
from tests.platform.realtime_support import token_for, with_test_verifier

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
BOB = uuid.UUID("00000000-0000-4000-8000-000000000b0b")
STAFF = uuid.UUID("00000000-0000-4000-8000-00000000057a")
FINISHED = {"succeeded", "failed"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "rate_limit_enabled": False,
        "jobs_backend": "embedded",
        "jobs_retry_backoff": 1,
        "jobs_retry_backoff_max": 1,
    }


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return with_test_verifier(create_app(settings))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000)),
            base_url="http://testserver",
        ) as http,
    ):
        await create_testing_tables(app.state.services.engine)
        yield http


def auth(user_id: uuid.UUID, role: str = "customer") -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user_id, role)}"}


async def enqueue(
    client: httpx.AsyncClient, payload: dict[str, Any], *, owner: uuid.UUID | None = ALICE
) -> str:
    body: dict[str, Any] = {"kind": "testing.effect", "payload": payload}
    if owner is not None:
        body["owner_id"] = str(owner)
    response = await client.post("/testing/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def wait_for_job(
    client: httpx.AsyncClient, job_id: str, *, timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=auth(STAFF, "staff"))
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in FINISHED:
            return body
        assert time.monotonic() < deadline, f"job still {body['status']}: {body}"
        await asyncio.sleep(0.05)


async def effect_count(services: Services, key: str) -> int:
    async with services.session_factory() as session:
        count = await session.scalar(select(func.count()).where(testing_job_effects.c.key == key))
    return int(count or 0)


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


def dispatched_ids(caplog: pytest.LogCaptureFixture) -> set[str]:
    ids = set()
    for record in caplog.records:
        if isinstance(record.msg, dict) and record.msg.get("event") == "job_dispatched":
            ids.add(str(record.msg["job_id"]))
    return ids


async def test_job_runs_and_its_state_is_readable(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    job_id = await enqueue(client, {"key": "runs"})

    job = await wait_for_job(client, job_id)

    assert job["status"] == "succeeded"
    assert job["kind"] == "testing.effect"
    assert job["attempts"] == 1
    assert job["result"] == {"key": "runs", "attempt": 1}
    assert job["error"] is None
    assert job["started_at"] is not None
    assert job["finished_at"] is not None
    assert await effect_count(services_of(app), "runs") == 1


async def test_rolled_back_request_never_sends_its_job(
    client: httpx.AsyncClient, app: FastAPI, caplog: pytest.LogCaptureFixture, backend: str
) -> None:
    caplog.set_level(logging.INFO)
    failed = await client.post(
        "/testing/jobs",
        json={"kind": "testing.effect", "payload": {"key": "rolled-back"}, "fail": True},
    )
    assert failed.status_code == 409
    rolled_back_id = failed.json()["error"]["details"]["job_id"]
    # A later job on the same runner finishing proves the runner was working meanwhile.
    sentinel = await wait_for_job(client, await enqueue(client, {"key": "sentinel"}))

    assert sentinel["status"] == "succeeded"
    dispatched = dispatched_ids(caplog)
    assert sentinel["id"] in dispatched
    assert rolled_back_id not in dispatched
    missing = await client.get(f"/api/v1/jobs/{rolled_back_id}", headers=auth(STAFF, "staff"))
    assert missing.status_code == 404
    assert await effect_count(services_of(app), "rolled-back") == 0


async def test_failing_attempts_are_retried_until_success(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    job_id = await enqueue(client, {"key": "flaky", "fail_times": 2})

    job = await wait_for_job(client, job_id)

    assert job["status"] == "succeeded"
    assert job["attempts"] == 3
    assert job["error"] is None
    assert await effect_count(services_of(app), "flaky") == 1


async def test_exhausted_retries_fail_the_job(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    # testing.effect allows 3 retries: 4 attempts in all.
    job_id = await enqueue(client, {"key": "doomed", "fail_times": 99})

    job = await wait_for_job(client, job_id)

    assert job["status"] == "failed"
    assert job["attempts"] == 4
    assert "planned failure on attempt 4" in job["error"]
    assert await effect_count(services_of(app), "doomed") == 0


async def test_a_succeeded_job_is_never_run_again(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    services = services_of(app)
    job_id = await enqueue(client, {"key": "once"})
    await wait_for_job(client, job_id)

    # A redelivered message (lost ack, visibility timeout) runs the same function again.
    outcome = await execute_job(services, uuid.UUID(job_id), retries_done=0)

    assert outcome is JobOutcome.SKIPPED
    job = await wait_for_job(client, job_id)
    assert job["attempts"] == 1
    assert await effect_count(services, "once") == 1


async def test_only_the_owner_and_staff_see_a_job(client: httpx.AsyncClient, backend: str) -> None:
    job_id = await enqueue(client, {"key": "private"}, owner=ALICE)
    await wait_for_job(client, job_id)
    system_job = await enqueue(client, {"key": "system"}, owner=None)
    await wait_for_job(client, system_job)
    url = f"/api/v1/jobs/{job_id}"

    owner = await client.get(url, headers=auth(ALICE))
    other = await client.get(url, headers=auth(BOB))
    staff = await client.get(url, headers=auth(STAFF, "staff"))
    anonymous = await client.get(url)
    forged = await client.get(url, headers={"Authorization": "Bearer not-a-token"})
    system_for_customer = await client.get(f"/api/v1/jobs/{system_job}", headers=auth(ALICE))

    assert owner.status_code == 200
    assert owner.json()["id"] == job_id
    assert other.status_code == 404
    assert other.json()["error"]["code"] == "not_found"
    assert staff.status_code == 200
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert forged.status_code == 401
    assert system_for_customer.status_code == 404


async def test_shutdown_drains_queued_jobs(settings: Settings, backend: str) -> None:
    app = with_test_verifier(create_app(settings))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        services = services_of(app)
        await create_testing_tables(services.engine)
        async with services.session_factory() as session:
            job_id = await services.jobs.enqueue(
                session, "testing.effect", {"key": "drained", "sleep": 0.5}
            )
            await session.commit()
            await run_after_commit(session)
        # Leaving the lifespan right away: the runner must finish the job first.

    check = create_app(settings)
    async with LifespanManager(check, startup_timeout=60, shutdown_timeout=60):
        async with services_of(check).session_factory() as session:
            job = await session.get(Job, job_id)
        assert job is not None
        assert job.status == "succeeded"
        assert await effect_count(services_of(check), "drained") == 1


async def test_purge_deletes_only_old_finished_jobs(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    services = services_of(app)
    now = utcnow()
    old = now - timedelta(days=services.settings.retention_days + 1)
    rows = {
        "old-succeeded": Job(kind="k", status="succeeded", finished_at=old),
        "old-failed": Job(kind="k", status="failed", finished_at=old),
        "recent-succeeded": Job(kind="k", status="succeeded", finished_at=now),
        "old-queued": Job(kind="k", status="queued", created_at=old),
        "old-running": Job(kind="k", status="running", started_at=old),
    }
    async with services.session_factory() as session, session.begin():
        session.add_all(rows.values())

    deleted = await run_purges(services)

    assert deleted["jobs"] == 2
    async with services.session_factory() as session:
        left = set(await session.scalars(select(Job.id)))
    kept = {name for name, job in rows.items() if job.id in left}
    assert kept == {"recent-succeeded", "old-queued", "old-running"}


# --- settings and Celery configuration (no database) ---------------------------------------


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "production",
        "secret_key": "p" * 48,
        "database_url": "postgresql+asyncpg://app@db.internal/slipway",
        "allowed_hosts": ["api.example.com"],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_production_refuses_jobs_without_a_broker() -> None:
    with pytest.raises(ValidationError) as caught:
        production()

    problems = [
        problem
        for error in caught.value.errors()
        if isinstance(cause := (error.get("ctx") or {}).get("error"), UnsafeSettingsError)
        for problem in cause.problems
    ]
    assert any("CELERY_BROKER_URL" in problem for problem in problems)


@pytest.mark.parametrize(
    "overrides",
    [
        {"redis_url": "redis://cache.internal:6379/0"},
        {"celery_broker_url": "redis://broker.internal:6379/1"},
        {"allow_embedded_jobs_in_production": True},
    ],
)
def test_production_accepts_a_broker_or_the_explicit_opt_in(overrides: dict[str, Any]) -> None:
    assert production(**overrides).production_problems() == []


def test_celery_backend_without_broker_is_invalid() -> None:
    with pytest.raises(ValidationError, match="CELERY_BROKER_URL"):
        make_settings(jobs_backend="celery")


def test_broker_defaults_to_redis_url() -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")

    assert settings.jobs_engine == "celery"
    assert settings.jobs_broker_url == "redis://127.0.0.1:1/0"
    assert make_settings().jobs_engine == "embedded"


def test_celery_is_configured_for_at_least_once_delivery(tmp_path: Path) -> None:
    settings = make_settings(
        celery_broker_url="redis://127.0.0.1:1/3",
        jobs_visibility_timeout=42,
        jobs_soft_time_limit=10,
        jobs_time_limit=20,
        jobs_max_tasks_per_child=7,
        celery_beat_schedule_file=tmp_path / "beat",
    )
    config = celery_config(settings)
    celery = create_celery_app(settings, set_as_current=False)
    task = celery.tasks["slipway.job.testing.effect"]
    mail = celery.tasks["slipway.job.mail.send"]

    assert config["broker_url"] == "redis://127.0.0.1:1/3"
    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_max_tasks_per_child"] == 7
    assert config["broker_transport_options"] == {"visibility_timeout": 42}
    assert config["task_time_limit"] == 20
    assert 10 < config["task_soft_time_limit"] < 20
    assert config["beat_schedule"]["purge-expired"]["task"] == PURGE_TASK
    assert PURGE_TASK in celery.tasks
    assert task.max_retries == 3
    assert mail.max_retries == settings.jobs_max_retries
    assert task.retry_backoff == settings.jobs_retry_backoff
    assert task.retry_jitter is True
