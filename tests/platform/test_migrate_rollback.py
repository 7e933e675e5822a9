"""`slipway migrate` on a schema newer than the code (a rollback) leaves it alone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from slipway.platform.db.migrate import upgrade
from tests.conftest import make_settings


def test_database_ahead_of_code_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "ahead.db"
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{db}")
    upgrade(settings)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")

    # Without the guard Alembic raises "Can't locate revision"; with it this returns.
    upgrade(settings)

    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == "9999_from_the_future"
