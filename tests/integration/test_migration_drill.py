"""The expand-contract drill (000 §9.4, docs/runbook/migrations.md): rename
drill_items.title to drill_items.name in two migrations while code runs against the
database the whole time.

- expand (add `name`, backfill, keep both in step) runs *under load* from the old code;
- on the intermediate schema the old code (title only) and the new code (name only) run
  side by side, each reading rows the other wrote and renamed;
- contract (drop `title`) runs under load from the new code alone;
- both downgrades run under load too, and every row written anywhere in the drill reads
  back with its final value at the end. Zero errors are tolerated. PostgreSQL and SQLite.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from slipway.ops.drill_code import (
    BASELINE,
    CONTRACT,
    EXPAND,
    NewCode,
    OldCode,
    migrate_drill,
)
from slipway.platform.db.engine import create_engine
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

#: Seconds the old and new code share the intermediate schema under load.
SHARED_PHASE = 4.0
#: Load kept running around each migration, before and after it.
AROUND_MIGRATION = 0.75
WORKERS_PER_RELEASE = 2


@dataclass
class Load:
    """What the workers did: finished rows per release and every error seen."""

    finished: dict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: {"old": [], "new": []}
    )
    operations: dict[str, int] = field(default_factory=lambda: {"old": 0, "new": 0})
    cross_reads: int = 0
    errors: list[str] = field(default_factory=list)

    def expected(self) -> dict[int, str]:
        return dict(self.finished["old"] + self.finished["new"])


async def worker(
    release: str,
    code: OldCode | NewCode,
    load: Load,
    stop: asyncio.Event,
    read_other: bool,
) -> None:
    other = "new" if release == "old" else "old"
    while not stop.is_set():
        try:
            first = f"{release}-{uuid.uuid4().hex[:12]}"
            item_id = await code.create(first)
            if (got := await code.read(item_id)) != first:
                load.errors.append(f"{release} read {got!r} after writing {first!r}")
            final = first + "-renamed"
            await code.rename(item_id, final)
            if (got := await code.read(item_id)) != final:
                load.errors.append(f"{release} read {got!r} after renaming to {final!r}")
            load.finished[release].append((item_id, final))
            if read_other and load.finished[other]:
                other_id, other_value = random.choice(load.finished[other])
                if (got := await code.read(other_id)) != other_value:
                    load.errors.append(
                        f"{release} read {got!r} for {other} row {other_id} ({other_value!r})"
                    )
                load.cross_reads += 1
            load.operations[release] += 1
        except Exception as error:  # every failure is a finding, never a crash of the drill
            load.errors.append(f"{release}: {type(error).__name__}: {error}")
            await asyncio.sleep(0.05)


class Running:
    """Workers of the given releases until stopped."""

    def __init__(self, engine: AsyncEngine, load: Load, releases: Iterable[str]) -> None:
        self.stop = asyncio.Event()
        releases = list(releases)
        both = len(set(releases)) == 2
        self.tasks = [
            asyncio.create_task(
                worker(
                    release,
                    OldCode(engine) if release == "old" else NewCode(engine),
                    load,
                    self.stop,
                    read_other=both,
                )
            )
            for release in releases
            for _ in range(WORKERS_PER_RELEASE)
        ]

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def migrate_under_load(
    engine: AsyncEngine, load: Load, releases: list[str], action: str, revision: str
) -> None:
    running = Running(engine, load, releases)
    await asyncio.sleep(AROUND_MIGRATION)
    await migrate_drill(engine, action, revision)  # type: ignore[arg-type]
    await asyncio.sleep(AROUND_MIGRATION)
    await running.finish()


async def columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        found = await connection.run_sync(
            lambda sync: {column["name"] for column in inspect(sync).get_columns("drill_items")}
        )
    return set(found)


async def read_all(code: OldCode | NewCode, expected: dict[int, str]) -> list[str]:
    wrong = []
    for item_id, value in expected.items():
        if (got := await code.read(item_id)) != value:
            wrong.append(f"row {item_id}: {got!r} != {value!r}")
    return wrong


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The application's own (migrated) database: the drill must leave its schema alone."""
    engine = create_engine(make_settings(database_url=database_url, db_pool_size=10))
    try:
        yield engine
    finally:
        await engine.dispose()


async def app_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.scalar(text("SELECT version_num FROM alembic_version"))


async def test_rename_by_expand_and_contract_under_load(engine: AsyncEngine) -> None:
    app_head = await app_revision(engine)
    load = Load()
    await migrate_drill(engine, "upgrade", BASELINE)

    # 1. expand while the old release writes and reads.
    await migrate_under_load(engine, load, ["old"], "upgrade", EXPAND)
    assert load.errors == []
    assert await columns(engine) == {"id", "title", "name"}

    # 2. the intermediate schema: both releases at once, each reading the other's rows.
    running = Running(engine, load, ["old", "new"])
    await asyncio.sleep(SHARED_PHASE)
    await running.finish()
    assert load.errors == []
    assert load.operations["new"] >= 10, load.operations
    assert load.cross_reads >= 10, load.cross_reads
    assert await read_all(OldCode(engine), load.expected()) == []
    assert await read_all(NewCode(engine), load.expected()) == []

    # 3. contract once only the new release runs; the old one cannot work any more.
    await migrate_under_load(engine, load, ["new"], "upgrade", CONTRACT)
    assert load.errors == []
    assert await columns(engine) == {"id", "name"}
    with pytest.raises(DBAPIError):
        await OldCode(engine).create("too late")
    assert await read_all(NewCode(engine), load.expected()) == []

    # 4. downgrade the contract under the new release: the intermediate schema is back and
    #    the old release works again, on every row (title backfilled from name).
    await migrate_under_load(engine, load, ["new"], "downgrade", EXPAND)
    assert load.errors == []
    assert await columns(engine) == {"id", "title", "name"}
    running = Running(engine, load, ["old", "new"])
    await asyncio.sleep(AROUND_MIGRATION)
    await running.finish()
    assert load.errors == []
    assert await read_all(OldCode(engine), load.expected()) == []

    # 5. downgrade the expand under the old release (code is rolled back first).
    await migrate_under_load(engine, load, ["old"], "downgrade", BASELINE)
    assert load.errors == []
    assert await columns(engine) == {"id", "title"}
    assert await read_all(OldCode(engine), load.expected()) == []
    with pytest.raises(DBAPIError):
        await NewCode(engine).read(1)

    await migrate_drill(engine, "downgrade", "base")
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert "drill_items" not in tables
    assert await app_revision(engine) == app_head, "the application's schema is untouched"
    total = sum(load.operations.values())
    assert total >= 40, load.operations
