"""AWS Lambda entry point: `slipway.lambda_handler.handler` (API Gateway REST and HTTP APIs,
ALB, Function URLs), through Mangum.

Nothing happens at import time: the sandbox's init phase stays short, and a configuration
error surfaces in the first invocation's log instead of a failed init. The first event
builds the app (settings, routes); Mangum then runs the app's lifespan around every
invocation ("on": a failing startup fails the invocation loudly), so the database engine
and Redis clients open and close within one invocation and never sit in a frozen sandbox
with connections the server has dropped. The engine uses NullPool (DB_NULL_POOL) for the
same reason: a pool would only hold stale connections between invocations. Put RDS Proxy
or PgBouncer in front of PostgreSQL: every concurrent sandbox opens its own connection.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any


@cache
def _adapter() -> Any:
    from mangum import Mangum

    from slipway.app import create_app
    from slipway.platform.settings import Settings

    settings = Settings(db_null_pool=True)
    # Mangum drives the app with run_until_complete on the thread's current loop. Create it
    # explicitly: asyncio.get_event_loop() without one is deprecated and will raise.
    asyncio.set_event_loop(asyncio.new_event_loop())
    return Mangum(create_app(settings), lifespan="on")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda handler: one API Gateway / ALB event in, one HTTP response out."""
    response: dict[str, Any] = _adapter()(event, context)
    return response
