"""Engine and session factory built from Settings; nothing connects at import time."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from slipway.platform.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(settings: Settings, *, null_pool: bool = False) -> AsyncEngine:
    """Create the async engine. `null_pool` (or DB_NULL_POOL) is for Lambda and one-shot
    CLI commands."""
    null_pool = null_pool or settings.db_null_pool
    kwargs: dict[str, Any] = {"echo": settings.db_echo}
    if settings.is_sqlite:
        kwargs["connect_args"] = {"timeout": 30}
        if null_pool:
            kwargs["poolclass"] = NullPool
    else:
        kwargs["connect_args"] = {
            "server_settings": {
                "application_name": settings.app_name[:60],
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
            "timeout": settings.db_pool_timeout,
        }
        if null_pool:
            kwargs["poolclass"] = NullPool
        else:
            kwargs.update(
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout,
                pool_recycle=settings.db_pool_recycle,
                pool_pre_ping=True,
            )
    engine = create_async_engine(settings.database_url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # expire_on_commit=False: responses are built after commit without lazy reloads.
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
