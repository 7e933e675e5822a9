"""Database pool metrics: size, checked out, overflow (gauges per worker) and wait time.

Checked-out connections follow the pool's checkout/checkin events, so a scrape sees the
current value rather than a sample; `refresh_pool_gauges` resynchronises all three from the
pool's own counters periodically. SQLAlchemy has no event for "started waiting", so the
wait is timed around the pool's `_do_get` by a subclass swapped in at runtime: the class
survives `pool.recreate()` (dispose), which builds the new pool from `self.__class__`.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from slipway.platform.metrics import instruments as m

_timed_classes: dict[type[Pool], type[Pool]] = {}


def _timed_pool_class(cls: type[Pool]) -> type[Pool]:
    timed = _timed_classes.get(cls)
    if timed is None:

        class TimedPool(cls):  # type: ignore[valid-type,misc]
            def _do_get(self) -> Any:
                start = perf_counter()
                try:
                    return super()._do_get()
                finally:
                    m.DB_POOL_WAIT.observe(perf_counter() - start)

        TimedPool.__name__ = TimedPool.__qualname__ = f"Timed{cls.__name__}"
        _timed_classes[cls] = timed = TimedPool
    return timed


def _stat(pool: Pool, name: str) -> int | None:
    # NullPool and StaticPool (SQLite in memory, Lambda) have no size or overflow.
    method = getattr(pool, name, None)
    if method is None:
        return None
    try:
        value = method()
    except (AttributeError, NotImplementedError):
        return None
    return value if isinstance(value, int) else None


def refresh_pool_gauges(engine: AsyncEngine) -> None:
    """Set the three gauges from the pool's own counters."""
    pool = engine.sync_engine.pool
    for gauge, name in (
        (m.DB_POOL_SIZE, "size"),
        (m.DB_POOL_CHECKED_OUT, "checkedout"),
        (m.DB_POOL_OVERFLOW, "overflow"),
    ):
        value = _stat(pool, name)
        if value is not None:
            gauge.set(value)


def instrument_pool(engine: AsyncEngine) -> None:
    """Track `engine`'s pool (once per engine)."""
    sync_engine = engine.sync_engine
    pool = sync_engine.pool
    if type(pool) in _timed_classes.values():
        return
    if _stat(pool, "size") is not None:
        pool.__class__ = _timed_pool_class(type(pool))

    def on_checkout(_dbapi: Any, _record: Any, _proxy: Any) -> None:
        m.DB_POOL_CHECKED_OUT.inc()
        overflow = _stat(sync_engine.pool, "overflow")
        if overflow is not None:
            m.DB_POOL_OVERFLOW.set(overflow)

    def on_checkin(_dbapi: Any, _record: Any) -> None:
        m.DB_POOL_CHECKED_OUT.dec()

    event.listen(sync_engine, "checkout", on_checkout)
    event.listen(sync_engine, "checkin", on_checkin)
    refresh_pool_gauges(engine)
