"""The request owns the transaction; after-commit callbacks; engine setup; migrations."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from slipway.app import create_app
from slipway.platform.db.migrate import current_revision, head_revision, upgrade
from slipway.platform.db.session import SessionDep, after_commit
from slipway.platform.errors import ConflictError
from slipway.platform.jobs.models import Job
from slipway.platform.logging import configure_logging
from slipway.platform.services import Services
from slipway.platform.settings import Settings


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The app plus a route that writes a Job row through SessionDep."""
    application = create_app(settings)
    events: list[dict[str, Any]] = []
    application.state.test_events = events

    @application.post("/_test/jobs")
    async def create_job(session: SessionDep, kind: str, fail: str = "no") -> dict[str, str]:
        job = Job(kind=kind, payload={"source": "test"})
        session.add(job)
        await session.flush()
        job_id = job.id

        async def record_visibility() -> None:
            # Runs after the commit: a separate session must already see the row.
            factory = application.state.services.session_factory
            async with factory() as other:
                visible = await other.get(Job, job_id) is not None
            events.append({"kind": kind, "visible_elsewhere": visible})

        async def broken_side_effect() -> None:
            raise RuntimeError("side effect failed")

        if fail == "side-effect":
            after_commit(session, broken_side_effect)
        after_commit(session, record_visibility)
        if fail == "app-error":
            raise ConflictError("refused after the write")
        if fail == "crash":
            raise RuntimeError("crash after the write")
        return {"id": str(job_id)}

    return application


def services_of(app: FastAPI) -> Services:
    services: Services = app.state.services
    return services


async def count_jobs(app: FastAPI, kind: str) -> int:
    async with services_of(app).session_factory() as session:
        total = await session.scalar(select(func.count()).select_from(Job).where(Job.kind == kind))
    return int(total or 0)


async def test_success_commits(client: httpx.AsyncClient, app: FastAPI, backend: str) -> None:
    kind = f"ok-{uuid.uuid4().hex[:8]}"

    response = await client.post("/_test/jobs", params={"kind": kind})

    assert response.status_code == 200
    assert await count_jobs(app, kind) == 1
    async with services_of(app).session_factory() as session:
        job = await session.get(Job, uuid.UUID(response.json()["id"]))
    assert job is not None
    assert job.payload == {"source": "test"}
    assert job.created_at.tzinfo is not None


@pytest.mark.parametrize(("fail", "status"), [("app-error", 409), ("crash", 500)])
async def test_error_rolls_back(
    client: httpx.AsyncClient, app: FastAPI, backend: str, fail: str, status: int
) -> None:
    kind = f"{fail}-{uuid.uuid4().hex[:8]}"

    response = await client.post("/_test/jobs", params={"kind": kind, "fail": fail})

    assert response.status_code == status
    assert await count_jobs(app, kind) == 0


async def test_after_commit_runs_only_after_commit(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    kind = f"cb-{uuid.uuid4().hex[:8]}"

    await client.post("/_test/jobs", params={"kind": kind})

    assert app.state.test_events == [{"kind": kind, "visible_elsewhere": True}]


@pytest.mark.parametrize("fail", ["app-error", "crash"])
async def test_after_commit_never_runs_on_rollback(
    client: httpx.AsyncClient, app: FastAPI, backend: str, fail: str
) -> None:
    await client.post("/_test/jobs", params={"kind": f"rb-{fail}", "fail": fail})
    await client.post("/_test/jobs", params={"kind": "next"})

    # Only the later, successful request ran its callback: nothing leaked across sessions.
    assert app.state.test_events == [{"kind": "next", "visible_elsewhere": True}]


async def test_failing_after_commit_callback_does_not_fail_the_request(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    kind = f"se-{uuid.uuid4().hex[:8]}"

    response = await client.post("/_test/jobs", params={"kind": kind, "fail": "side-effect"})

    assert response.status_code == 200
    assert await count_jobs(app, kind) == 1
    # The next callback still ran, and the failure is in the log with the request id.
    assert app.state.test_events == [{"kind": kind, "visible_elsewhere": True}]
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    (failure,) = [line for line in lines if line["event"] == "after_commit_failed"]
    assert failure["request_id"] == response.headers["x-request-id"]


async def test_schema_is_at_head(settings: Settings, backend: str) -> None:
    assert await current_revision(settings) == head_revision()


def test_upgrade_is_idempotent(settings: Settings, backend: str) -> None:
    upgrade(settings)  # already at head: a no-op, not an error

    assert asyncio.run(current_revision(settings)) == head_revision()


async def test_naming_conventions_name_constraints(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    async with services_of(app).engine.connect() as conn:
        if backend == "postgresql":
            names = set(
                (
                    await conn.execute(
                        text("SELECT conname FROM pg_constraint WHERE conrelid = 'jobs'::regclass")
                    )
                ).scalars()
            )
            indexes = set(
                (
                    await conn.execute(
                        text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")
                    )
                ).scalars()
            )
        else:
            sql = (
                await conn.execute(text("SELECT sql FROM sqlite_master WHERE name='jobs'"))
            ).scalar()
            names = {"pk_jobs"} if "CONSTRAINT pk_jobs" in str(sql) else set()
            indexes = set(
                (
                    await conn.execute(
                        text(
                            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='jobs'"
                        )
                    )
                ).scalars()
            )
    assert "pk_jobs" in names
    assert "ix_jobs_status_finished_at" in indexes


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_pragmas(client: httpx.AsyncClient, app: FastAPI, backend: str) -> None:
    async with services_of(app).engine.connect() as conn:
        journal_mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
        foreign_keys = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
        busy_timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()

    assert str(journal_mode).lower() == "wal"
    assert foreign_keys == 1
    assert int(busy_timeout or 0) > 0


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize(
    "settings_overrides",
    [{"db_pool_size": 3, "db_max_overflow": 2, "db_statement_timeout_ms": 1234}],
)
async def test_postgres_pool_and_session_settings(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    engine = services_of(app).engine
    async with engine.connect() as conn:
        timeout = (await conn.execute(text("SHOW statement_timeout"))).scalar()
        application_name = (await conn.execute(text("SHOW application_name"))).scalar()

    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    assert engine.url.drivername == "postgresql+asyncpg"
    assert timeout == "1234ms"
    assert application_name == "Slipway"


async def test_datetimes_are_aware_utc_on_every_backend(
    client: httpx.AsyncClient, app: FastAPI, backend: str
) -> None:
    plus_five = timezone(timedelta(hours=5))
    finished = datetime(2026, 1, 1, 12, 0, tzinfo=plus_five)  # 07:00 UTC
    kind = f"tz-{uuid.uuid4().hex[:8]}"
    async with services_of(app).session_factory() as session:
        session.add(Job(kind=kind, finished_at=finished))
        await session.commit()

    async with services_of(app).session_factory() as session:
        job = (await session.scalars(select(Job).where(Job.kind == kind))).one()
        # Compared as instants, not wall-clock digits: 07:00 UTC is before 08:00 UTC.
        earlier = await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.kind == kind, Job.finished_at < datetime(2026, 1, 1, 8, 0, tzinfo=UTC))
        )

    assert job.finished_at == finished
    assert job.finished_at is not None
    assert job.finished_at.utcoffset() == timedelta(0)
    assert job.created_at.tzinfo is not None
    assert job.created_at <= datetime.now(UTC)
    assert earlier == 1
