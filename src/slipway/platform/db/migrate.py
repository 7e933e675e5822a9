"""Run Alembic programmatically. On PostgreSQL the upgrade holds an advisory lock, so
replicas that start together cannot race (ERRATA: migrations in every entrypoint race)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from slipway.platform.db.engine import create_engine
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: Any constant works; it only has to be the same for every replica of this app.
ADVISORY_LOCK_KEY = 0x5_11_B_A_7  # "slipway"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option(
        "file_template", "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    return cfg


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    current = MigrationContext.configure(connection).get_current_revision()
    known = {rev.revision for rev in ScriptDirectory.from_config(cfg).walk_revisions()}
    if current is not None and current not in known:
        # A rollback deploys older code against a schema a newer release migrated (Heroku
        # and DigitalOcean rerun the release step). Expand/contract migrations keep that
        # schema compatible, so this is not an error: leave it alone and say so.
        log.warning("database_ahead_of_code", current=current, code_head=head_revision())
        return
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def _run(settings: Settings, revision: str) -> None:
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:
                # Session-level lock on this connection; released on unlock or disconnect.
                await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
                await conn.commit()
            try:
                await conn.run_sync(_upgrade, alembic_config(), revision)
                await conn.commit()
            finally:
                if postgres:
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY}
                    )
                    await conn.commit()
    finally:
        await engine.dispose()


def upgrade(settings: Settings, revision: str = "head") -> None:
    log.info("migrate_start", revision=revision, database=settings.database_url.split(":")[0])
    asyncio.run(_run(settings, revision))
    log.info("migrate_done", revision=revision)


def upgrade_head(settings: Settings) -> None:
    upgrade(settings, "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(settings: Settings) -> str | None:
    engine = create_engine(settings, null_pool=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
