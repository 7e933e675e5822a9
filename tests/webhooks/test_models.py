"""The webhook tables the migrations create match the ORM models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from slipway.models import metadata
from slipway.platform.db.migrate import upgrade
from tests.conftest import make_settings

TABLES = {"webhook_endpoints", "webhook_deliveries"}


def only_webhook_tables(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
    table = obj if type_ == "table" else getattr(obj, "table", None)
    return table is None or table.name in TABLES


def test_migrations_match_the_models(tmp_path: Path) -> None:
    path = tmp_path / "schema.db"
    upgrade(make_settings(database_url=f"sqlite+aiosqlite:///{path}"))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "include_object": only_webhook_tables}
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()
    assert set(metadata.tables) >= TABLES
