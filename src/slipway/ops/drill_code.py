"""The expand-contract drill of docs/runbook/migrations.md: renaming drill_items.title to
drill_items.name with no moment at which running code breaks.

Two code paths stand for two releases of an application: `OldCode` knows only `title`,
`NewCode` knows only `name`, each with its own table definition, exactly as two deployed
versions would have. The drill's migrations live in their own Alembic script directory
(`drill_migrations/`, version table `drill_alembic_version`), so the application's schema
and its migration history never see them.

    d001_drill_items     drill_items(id, title)                  old code only
    d002_expand_name     + name, trigger keeps both in step      old and new code
    d003_contract_title  - title                                 new code only
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

DRILL_DIR = Path(__file__).resolve().parent / "drill_migrations"
DRILL_VERSION_TABLE = "drill_alembic_version"

BASELINE = "d001_drill_items"
EXPAND = "d002_expand_name"
CONTRACT = "d003_contract_title"

_old_metadata = MetaData()
_new_metadata = MetaData()
OLD_ITEMS = Table(
    "drill_items",
    _old_metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String(200), nullable=False),
)
NEW_ITEMS = Table(
    "drill_items",
    _new_metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
)


def drill_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(DRILL_DIR))
    return config


async def migrate_drill(
    engine: AsyncEngine, action: Literal["upgrade", "downgrade"], revision: str
) -> None:
    """Run the drill's migrations to `revision` on `engine` (alembic upgrade/downgrade)."""
    config = drill_config()

    def run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async with engine.connect() as connection:
        await connection.run_sync(run)
        await connection.commit()


class _Code:
    table: Table
    column: str

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, value: str) -> int:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                insert(self.table).values({self.column: value}).returning(self.table.c.id)
            )
            return int(result.scalar_one())

    async def read(self, item_id: int) -> str | None:
        async with self.engine.connect() as connection:
            value = await connection.scalar(
                select(self.table.c[self.column]).where(self.table.c.id == item_id)
            )
            return None if value is None else str(value)

    async def rename(self, item_id: int, value: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                update(self.table).where(self.table.c.id == item_id).values({self.column: value})
            )


class OldCode(_Code):
    """The release before the rename: reads and writes `title`."""

    table = OLD_ITEMS
    column = "title"


class NewCode(_Code):
    """The release after the rename: reads and writes `name`."""

    table = NEW_ITEMS
    column = "name"
