"""Queue a templated message from a request or a job (sent after the commit)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from slipway.platform.jobs.runtime import JobQueue
from slipway.platform.mail.message import UnknownTemplateError, template_exists


async def queue_mail(
    jobs: JobQueue,
    session: AsyncSession,
    *,
    to: str | Sequence[str],
    template: str,
    context: Mapping[str, Any] | None = None,
    owner_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Enqueue a `mail.send` job for `template`; returns the job id."""
    if not template_exists(template):
        raise UnknownTemplateError(template)
    recipients = [to] if isinstance(to, str) else list(to)
    payload = {"to": recipients, "template": template, "context": dict(context or {})}
    return await jobs.enqueue(session, "mail.send", payload, owner_id=owner_id)
