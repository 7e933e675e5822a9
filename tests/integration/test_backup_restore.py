"""`slipway db backup` / `slipway db restore` on a seeded database, through the real CLI:
back up, restore into a fresh database, and compare every table's row count and checksum.
PostgreSQL (pg_dump/pg_restore, custom format) and SQLite (online backup API)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from slipway.ops.backup import PG_MAGIC, SQLITE_MAGIC, pg_command
from slipway.platform.db.engine import create_engine
from tests.conftest import TEST_SECRET, make_settings
from tests.integration.conftest import run_slipway, slipway_env

pytestmark = pytest.mark.integration

SEED = ["seed", "--users", "8", "--products", "120", "--orders", "60", "--seed", "7"]


def cli_env(database_url: str) -> dict[str, str]:
    return slipway_env(
        DATABASE_URL=database_url,
        SECRET_KEY=TEST_SECRET,
        ENVIRONMENT="testing",
        LOG_LEVEL="WARNING",
    )


def slipway(args: list[str], database_url: str, cwd: Path) -> Any:
    return run_slipway(args, cwd=cwd, env=cli_env(database_url), timeout=180)


async def _fingerprints(database_url: str) -> dict[str, tuple[int, str]]:
    """{table: (rows, sha256 of the sorted rows)} for every table, migrations' included."""
    engine = create_engine(make_settings(database_url=database_url), null_pool=True)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            result: dict[str, tuple[int, str]] = {}
            for table in tables:
                rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
                digest = hashlib.sha256()
                for line in sorted(repr(tuple(row)) for row in rows):
                    digest.update(line.encode())
                result[table] = (len(rows), digest.hexdigest())
            return result
    finally:
        await engine.dispose()


def fingerprints(database_url: str) -> dict[str, tuple[int, str]]:
    return asyncio.run(_fingerprints(database_url))


@pytest.fixture
def fresh_database(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no tables at all) on the same backend."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = f"r_{uuid.uuid4().hex[:16]}"
    server.create_database(name)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


def test_backup_of_a_seeded_database_restores_identically(
    database_url: str, fresh_database: str, backend: str, tmp_path: Path
) -> None:
    seeded = slipway(SEED, database_url, tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    before = fingerprints(database_url)
    assert before["users"][0] == 8
    assert before["products"][0] == 120
    assert before["orders"][0] == 60
    assert before["order_lines"][0] > 0

    backed_up = slipway(["db", "backup", "--output-dir", "backups"], database_url, tmp_path)
    assert backed_up.returncode == 0, backed_up.stderr
    (archive,) = (tmp_path / "backups").iterdir()
    assert archive.name.startswith("slipway-")
    assert f"backup written: backups/{archive.name} ({backend}," in backed_up.stdout
    assert archive.read_bytes().startswith(PG_MAGIC if backend == "postgresql" else SQLITE_MAGIC)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600, "backups are owner-only"
    # The progress bar ran to the end: one step per table (PostgreSQL) or page (SQLite).
    label = "pg_dump" if backend == "postgresql" else "sqlite backup"
    assert label in backed_up.stderr
    assert re.search(r" (\d+)/\1 ", backed_up.stderr), backed_up.stderr

    restored = slipway(["db", "restore", str(archive)], fresh_database, tmp_path)
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout

    after = fingerprints(fresh_database)
    assert after == before
    # The restored database is a working Slipway database at the same revision.
    migrated = slipway(["migrate"], fresh_database, tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert fingerprints(fresh_database)["alembic_version"] == before["alembic_version"]


def test_restore_refuses_a_database_with_tables_unless_forced(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    backed_up = slipway(["db", "backup", "--output", "one.bak"], database_url, tmp_path)
    assert backed_up.returncode == 0, backed_up.stderr

    refused = slipway(["db", "restore", "one.bak"], database_url, tmp_path)
    assert refused.returncode == 1
    assert "--force" in refused.stderr
    forced = slipway(["db", "restore", "one.bak", "--force"], database_url, tmp_path)
    assert forced.returncode == 0, forced.stderr

    again = slipway(["db", "backup", "--output", "one.bak"], database_url, tmp_path)
    assert again.returncode == 1
    assert "never overwritten" in again.stderr


def test_a_backup_of_the_other_backend_is_refused(
    database_url: str, backend: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.bak"
    wrong.write_bytes((SQLITE_MAGIC if backend == "postgresql" else PG_MAGIC) + b"\0" * 64)
    result = slipway(["db", "restore", str(wrong), "--force"], database_url, tmp_path)
    assert result.returncode == 1
    assert f"is not a {backend} backup" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite"])
def test_retention_keeps_the_newest_backups(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    older = [f"slipway-2020010{day}T000000Z.sqlite3" for day in (1, 2, 3)]
    for name in older:
        (directory / name).write_bytes(SQLITE_MAGIC)
    (directory / "notes.txt").write_text("not a backup", encoding="utf-8")

    result = slipway(
        ["db", "backup", "--output-dir", "b", "--keep", "2", "--no-progress"],
        database_url,
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    kept = sorted(path.name for path in directory.iterdir())
    assert kept[:2] == ["notes.txt", older[2]]
    assert kept[2].startswith("slipway-2")
    assert kept[2] not in older
    assert result.stdout.count("pruned:") == 2
    assert result.stderr == "", "--no-progress draws nothing"


def test_the_password_reaches_pg_tools_by_environment_never_argv() -> None:
    settings = make_settings(
        database_url="postgresql://backup:s3cr3t-pw@db.internal:6543/shop?sslmode=require"
    )
    argv, env = pg_command("pg_dump", ["--format=custom"], settings)
    assert not any("s3cr3t-pw" in arg for arg in argv)
    assert (env["PGPASSWORD"], env["PGUSER"], env["PGHOST"], env["PGPORT"]) == (
        "s3cr3t-pw",
        "backup",
        "db.internal",
        "6543",
    )
    assert (env["PGDATABASE"], env["PGSSLMODE"]) == ("shop", "require")
    assert make_url(settings.database_url).password == "s3cr3t-pw"
