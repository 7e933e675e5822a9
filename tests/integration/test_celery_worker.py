"""A real Celery worker (`slipway worker`, a child process) against real Redis and
PostgreSQL: jobs run end to end, a rolled-back request sends nothing, failures are retried,
a worker killed with SIGKILL mid-task is redelivered with its effect happening exactly
once, and beat schedules the purge."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from slipway.app import create_app
from slipway.platform.db.base import utcnow
from slipway.platform.jobs.models import Job
from slipway.platform.jobs.testing import create_testing_tables, testing_job_effects
from slipway.platform.services import Services
from slipway.platform.settings import Settings
from tests.conftest import TEST_SECRET, make_settings
from tests.integration.conftest import SLIPWAY, run_slipway, slipway_env
from tests.platform.realtime_support import token_for, with_test_verifier
from tests.support.services import ManagedProcess, PostgresService, RedisService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

ALICE = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
STAFF = uuid.UUID("00000000-0000-4000-8000-00000000057a")
#: Short, so a killed worker's task comes back within the test.
VISIBILITY_TIMEOUT = 3
WORKER_START_TIMEOUT = 60.0


@dataclass
class Stack:
    """One database and one queue of their own; the session's PostgreSQL and Redis."""

    settings: Settings
    env: dict[str, str]
    workdir: Path
    redis: RedisService
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, command: str, name: str) -> ManagedProcess:
        argv = [SLIPWAY, command]
        if command == "worker":
            argv += ["--concurrency", "1"]
        process = ManagedProcess(
            argv,
            name=f"slipway-{name}",
            env=self.env,
            inherit_env=False,
            cwd=self.workdir,
            log_path=self.workdir / f"{name}.log",
        ).start()
        self.processes.append(process)
        if command == "worker":
            process.wait_until(
                lambda: " ready." in process.log_text(),
                what="celery worker ready",
                timeout=WORKER_START_TIMEOUT,
            )
        return process

    def queue_length(self) -> int:
        return int(self.redis.command("LLEN", self.settings.jobs_queue))


@pytest.fixture
def stack(
    postgres_server: PostgresService,
    pg_template: str,
    redis_server: RedisService,
    tmp_path: Path,
) -> Iterator[Stack]:
    database = f"t_{uuid.uuid4().hex[:16]}"
    database_url = postgres_server.create_database(database, template=pg_template)
    run = uuid.uuid4().hex[:10]
    values = {
        "database_url": database_url,
        "redis_url": redis_server.url(),
        "jobs_queue": f"slipway-test-{run}",
        "jobs_visibility_timeout": VISIBILITY_TIMEOUT,
        "jobs_retry_backoff": 1,
        "jobs_retry_backoff_max": 1,
        "jobs_soft_time_limit": 20,
        "jobs_time_limit": 30,
        "jobs_purge_interval_seconds": 1,
        "celery_beat_schedule_file": str(tmp_path / "beat-schedule"),
        "rate_limit_enabled": False,
        "cache_prefix": f"slipway-it-{run}",
    }
    env = slipway_env(
        ENVIRONMENT="testing",
        SECRET_KEY=TEST_SECRET,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        **{name.upper(): str(value) for name, value in values.items()},
    )
    stack = Stack(make_settings(**values), env, tmp_path, redis_server)
    try:
        yield stack
    finally:
        for process in stack.processes:
            process.stop(timeout=15)
        postgres_server.drop_database(database)


@pytest.fixture
async def app(stack: Stack) -> AsyncIterator[FastAPI]:
    application = with_test_verifier(create_app(stack.settings))
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=60) as manager:
        await create_testing_tables(services_of(application).engine)
        application.state.asgi = manager.app
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app.state.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def enqueue(client: httpx.AsyncClient, payload: dict[str, Any], **extra: Any) -> str:
    body = {"kind": "testing.effect", "payload": payload, "owner_id": str(ALICE), **extra}
    response = await client.post("/testing/jobs", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def get_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token_for(ALICE)}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_status(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = await get_job(client, job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}: {job}"
        await asyncio.sleep(0.1)


async def effect_count(app: FastAPI, key: str) -> int:
    async with services_of(app).session_factory() as session:
        count = await session.scalar(select(func.count()).where(testing_job_effects.c.key == key))
    return int(count or 0)


def pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


async def test_worker_runs_a_job_end_to_end(
    stack: Stack, app: FastAPI, client: httpx.AsyncClient
) -> None:
    worker = stack.start("worker", "worker")

    job_id = await enqueue(client, {"key": "end-to-end"})
    job = await wait_for_status(client, job_id, {"succeeded", "failed"})

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["result"] == {"key": "end-to-end", "attempt": 1}
    assert await effect_count(app, "end-to-end") == 1
    assert f"slipway.job.testing.effect[{job_id}]" in worker.log_text()
    assert stack.queue_length() == 0


async def test_rolled_back_request_sends_nothing(
    stack: Stack, app: FastAPI, client: httpx.AsyncClient
) -> None:
    worker = stack.start("worker", "worker")

    failed = await client.post(
        "/testing/jobs",
        json={"kind": "testing.effect", "payload": {"key": "rolled-back"}, "fail": True},
    )
    assert failed.status_code == 409
    rolled_back_id = failed.json()["error"]["details"]["job_id"]
    sentinel_id = await enqueue(client, {"key": "sentinel"})
    sentinel = await wait_for_status(client, sentinel_id, {"succeeded", "failed"})

    assert sentinel["status"] == "succeeded"
    log = worker.log_text()
    assert sentinel_id in log
    assert rolled_back_id not in log
    assert stack.queue_length() == 0
    async with services_of(app).session_factory() as session:
        assert await session.get(Job, uuid.UUID(rolled_back_id)) is None
    assert await effect_count(app, "rolled-back") == 0


async def test_failed_attempt_is_retried_by_celery(
    stack: Stack, app: FastAPI, client: httpx.AsyncClient
) -> None:
    worker = stack.start("worker", "worker")

    job_id = await enqueue(client, {"key": "flaky", "fail_times": 1})
    job = await wait_for_status(client, job_id, {"succeeded", "failed"})

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert await effect_count(app, "flaky") == 1
    assert "JobRetryError" in worker.log_text()


async def test_worker_killed_mid_task_is_redelivered_and_runs_once(
    stack: Stack, app: FastAPI, client: httpx.AsyncClient
) -> None:
    first = stack.start("worker", "worker-killed")
    job_id = await enqueue(client, {"key": "survives-sigkill", "sleep": 3})
    running = await wait_for_status(client, job_id, {"running"}, timeout=30)
    assert running["attempts"] == 1

    # The whole worker (main process and pool child) dies at once: nothing acks or
    # requeues the message; only Redis's visibility timeout can bring it back.
    first.stop(sig=signal.SIGKILL, group=True)
    assert (await get_job(client, job_id))["status"] == "running"
    assert await effect_count(app, "survives-sigkill") == 0
    await asyncio.sleep(VISIBILITY_TIMEOUT + 1)
    second = stack.start("worker", "worker-second")
    job = await wait_for_status(client, job_id, {"succeeded", "failed"})

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert await effect_count(app, "survives-sigkill") == 1
    assert job_id in second.log_text()


async def test_pool_child_killed_mid_task_is_requeued_and_runs_once(
    stack: Stack, app: FastAPI, client: httpx.AsyncClient
) -> None:
    worker = stack.start("worker", "worker")
    job_id = await enqueue(client, {"key": "child-killed", "sleep": 3})
    await wait_for_status(client, job_id, {"running"}, timeout=30)

    (child,) = pool_children(worker.pid)
    os.kill(child, signal.SIGKILL)
    job = await wait_for_status(client, job_id, {"succeeded", "failed"})

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert await effect_count(app, "child-killed") == 1
    assert worker.is_running()
    assert "WorkerLostError" in worker.log_text()


async def test_beat_schedules_the_purge(stack: Stack, app: FastAPI) -> None:
    services = services_of(app)
    old = utcnow() - timedelta(days=services.settings.retention_days + 1)
    expired = Job(kind="testing.effect", status="succeeded", finished_at=old)
    recent = Job(kind="testing.effect", status="succeeded", finished_at=utcnow())
    async with services.session_factory() as session, session.begin():
        session.add_all([expired, recent])

    stack.start("worker", "worker")
    beat = stack.start("beat", "beat")
    deadline = time.monotonic() + 60
    while True:
        async with services.session_factory() as session:
            left = set(await session.scalars(select(Job.id)))
        if expired.id not in left:
            break
        assert time.monotonic() < deadline, beat.log_tail()
        await asyncio.sleep(0.2)

    assert recent.id in left
    assert beat.is_running()


def test_worker_refuses_to_start_without_a_broker(tmp_path: Path) -> None:
    env = slipway_env(ENVIRONMENT="testing", SECRET_KEY=TEST_SECRET)

    worker = run_slipway(["worker"], cwd=tmp_path, env=env)
    beat = run_slipway(["beat"], cwd=tmp_path, env=env)

    for result in (worker, beat):
        assert result.returncode == 2
        assert "CELERY_BROKER_URL" in result.stderr
        assert "Traceback" not in result.stderr
