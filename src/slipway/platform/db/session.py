"""The request owns the transaction: commit on success, roll back on any error.

Services only `flush()`. Callbacks registered with `after_commit` (job enqueues, events,
cache invalidation) run only once the commit succeeded, so a rolled-back request sends
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger("slipway.db")

AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT_KEY = "slipway_after_commit"


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` after this session's transaction commits; dropped on rollback."""
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


async def run_after_commit(session: AsyncSession) -> None:
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            # The transaction is committed; a failed side effect must not turn into a 500.
            log.exception("after_commit_failed", callback=getattr(callback, "__name__", "?"))


def discard_after_commit(session: AsyncSession) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    factory = request.app.state.services.session_factory
    async with factory() as session:
        try:
            yield session
        except BaseException:
            discard_after_commit(session)
            await session.rollback()
            raise
        else:
            # Commit before the response is sent, so a client never sees a 2xx for a
            # write that then failed to commit.
            await session.commit()
            await run_after_commit(session)


# scope="function": the commit runs when the endpoint returns, before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
