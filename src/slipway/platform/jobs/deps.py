"""Dependencies of the jobs API.

`get_job_viewer` authenticates the caller with the application's token verifier (the
same hook the WebSocket endpoint uses). The identity area may replace its body with its
own current-user dependency; the router only needs `user_id` and `is_staff`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from slipway.platform.errors import AuthenticationError
from slipway.platform.events.auth import Principal, bearer_token, get_token_verifier
from slipway.platform.jobs.runtime import JobQueue


async def get_job_viewer(request: Request) -> Principal:
    """The authenticated caller, or 401."""
    token = bearer_token(request.headers.get("authorization"))
    verifier = get_token_verifier(request.app)
    principal = await verifier(token) if token is not None and verifier is not None else None
    if principal is None:
        raise AuthenticationError()
    return principal


def get_jobs(request: Request) -> JobQueue:
    jobs: JobQueue = request.app.state.services.jobs
    return jobs


JobViewer = Annotated[Principal, Depends(get_job_viewer)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
