"""Replicas that start together run `slipway migrate` at once: the advisory lock makes
one apply the migrations while the other waits, and both succeed."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from slipway.platform.db.migrate import head_revision
from tests.integration.conftest import SLIPWAY, slipway_env
from tests.support.services import ManagedProcess

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

MIGRATE_TIMEOUT = 90.0


@pytest.fixture
def fresh_database(postgres_server: Any) -> Any:
    name = f"race_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    yield name
    postgres_server.drop_database(name)


def test_concurrent_migrate_both_succeed(
    postgres_server: Any, fresh_database: str, tmp_path: Path
) -> None:
    # The plain postgresql:// form, as platforms hand it out; Slipway rewrites it.
    url = postgres_server.dsn(fresh_database)
    assert url.startswith("postgresql://")
    env = slipway_env(DATABASE_URL=url, LOG_FORMAT="json")
    processes = [
        ManagedProcess(
            [SLIPWAY, "migrate"],
            name=f"migrate-{index}",
            env=env,
            inherit_env=False,
            cwd=tmp_path,
            log_path=tmp_path / f"migrate-{index}.log",
        )
        for index in range(2)
    ]
    try:
        for process in processes:
            process.start()
        codes = [process.wait(timeout=MIGRATE_TIMEOUT) for process in processes]
    finally:
        for process in processes:
            process.close()

    logs = [process.log_text() for process in processes]
    assert codes == [0, 0], logs
    version = postgres_server.fetchval("SELECT version_num FROM alembic_version", fresh_database)
    rows = postgres_server.fetchval("SELECT count(*) FROM alembic_version", fresh_database)
    assert version == head_revision()
    assert rows == 1
    # Under the lock, exactly one process ran the upgrade steps; the other found head.
    applied = [log.count("Running upgrade") for log in logs]
    assert min(applied) == 0
    assert max(applied) >= 1
    assert postgres_server.fetchval("SELECT to_regclass('public.jobs') IS NOT NULL", fresh_database)


def test_migrate_on_a_migrated_database_is_a_no_op(
    postgres_server: Any, fresh_database: str, tmp_path: Path
) -> None:
    env = slipway_env(DATABASE_URL=postgres_server.url(fresh_database), LOG_FORMAT="json")
    for _ in range(2):
        process = ManagedProcess(
            [SLIPWAY, "migrate"],
            name="migrate",
            env=env,
            inherit_env=False,
            cwd=tmp_path,
        )
        try:
            process.start()
            assert process.wait(timeout=MIGRATE_TIMEOUT) == 0, process.log_text()
        finally:
            process.close()

    version = postgres_server.fetchval("SELECT version_num FROM alembic_version", fresh_database)
    assert version == head_revision()
