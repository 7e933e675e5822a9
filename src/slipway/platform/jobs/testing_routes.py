"""Routes the acceptance tests drive: mounted only when ENVIRONMENT=testing.

- `POST /testing/jobs` enqueues a job; with `"fail": true` the request then fails (409),
  so its transaction rolls back (the would-be job id is in the error details).
- `POST /testing/events` publishes `count` events (optionally padded) to an audience.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from slipway.platform.db.session import SessionDep
from slipway.platform.errors import ConflictError
from slipway.platform.events.models import Audience, Event
from slipway.platform.services import ServicesDep

router = APIRouter(prefix="/testing", tags=["testing"], include_in_schema=False)


class EnqueueRequest(BaseModel):
    kind: str
    payload: dict[str, Any] = {}
    owner_id: uuid.UUID | None = None
    fail: bool = False


class EnqueueResponse(BaseModel):
    job_id: uuid.UUID


class PublishRequest(BaseModel):
    type: str = "testing.event"
    data: dict[str, Any] = {}
    everyone: bool = False
    users: list[uuid.UUID] = []
    staff: bool = False
    count: int = Field(default=1, ge=1, le=100_000)
    #: Bytes of filler per event, to fill a slow consumer's buffers quickly.
    pad: int = Field(default=0, ge=0, le=1_000_000)
    #: Seconds between two events, to pace a burst below what a fast client reads.
    interval: float = Field(default=0, ge=0, le=1)


class PublishResponse(BaseModel):
    published: int


@router.post("/jobs", response_model=EnqueueResponse)
async def enqueue_job(
    body: EnqueueRequest, session: SessionDep, services: ServicesDep
) -> EnqueueResponse:
    job_id = await services.jobs.enqueue(session, body.kind, body.payload, owner_id=body.owner_id)
    if body.fail:
        raise ConflictError("failing on purpose after enqueue", details={"job_id": str(job_id)})
    return EnqueueResponse(job_id=job_id)


@router.post("/events", response_model=PublishResponse)
async def publish_events(body: PublishRequest, services: ServicesDep) -> PublishResponse:
    audience = Audience(everyone=body.everyone, users=frozenset(body.users), staff=body.staff)
    filler = "x" * body.pad
    for index in range(body.count):
        data = {**body.data, "seq": index, **({"pad": filler} if filler else {})}
        await services.events.publish(Event(body.type, data, audience))
        if body.interval:
            await asyncio.sleep(body.interval)
    return PublishResponse(published=body.count)
