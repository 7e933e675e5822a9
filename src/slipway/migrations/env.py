"""Alembic environment. Slipway drives it through `slipway migrate`, which hands over an
open connection (holding the advisory lock); the `alembic` CLI path builds its own."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from slipway.models import metadata
from slipway.platform.db.engine import create_engine
from slipway.platform.settings import Settings

config = context.config
target_metadata = metadata


def _configure_and_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    engine = create_engine(Settings(), null_pool=True)
    async with engine.connect() as connection:
        await connection.run_sync(_configure_and_run)
        await connection.commit()
    await engine.dispose()


def run() -> None:
    if context.is_offline_mode():
        context.configure(url=Settings().database_url, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
    else:
        asyncio.run(_run_standalone())


run()
