"""`GET /api/v1/jobs/{id}`: a job's state, the same with or without Celery.

No `from __future__ import annotations` here: the endpoint's annotations name the
factory's `viewer` argument, which FastAPI can only see if they are evaluated in place.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from slipway.platform.db.session import SessionDep
from slipway.platform.errors import NotFoundError
from slipway.platform.events.auth import Principal
from slipway.platform.jobs.deps import get_job_viewer
from slipway.platform.jobs.models import Job
from slipway.platform.jobs.schemas import JobRead


def build_jobs_router(viewer: Callable[..., Awaitable[Principal] | Principal | Any]) -> APIRouter:
    """The jobs router, authenticated by `viewer` (any dependency returning a principal)."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])

    @router.get("/{job_id}", response_model=JobRead)
    async def get_job(
        job_id: uuid.UUID, session: SessionDep, principal: Annotated[Principal, Depends(viewer)]
    ) -> JobRead:
        """A background job's status, attempts, result and error (owner or staff only)."""
        job = await session.get(Job, job_id)
        # Someone else's job answers exactly like a missing one: ids are not disclosed.
        if job is None or not (
            principal.is_staff or (job.owner_id is not None and job.owner_id == principal.user_id)
        ):
            raise NotFoundError("No such job.")
        return JobRead.model_validate(job)

    return router


router = build_jobs_router(get_job_viewer)
