"""Identity side effects that leave the request: account mails (through the platform's
`mail.send` job) and the periodic purge of expired sessions and tokens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.repository import IdentityRepository
from slipway.platform.jobs.purge import purger
from slipway.platform.mail import queue_mail
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from slipway.platform.services import Services

log = structlog.get_logger("slipway.identity.tasks")

MailTemplate = Literal["verify_email", "password_reset", "account_exists"]


@dataclass(frozen=True, slots=True)
class IdentityMail:
    template: MailTemplate
    to: str
    #: Template variables. The link may hold a token: never log this object whole.
    context: dict[str, Any] = field(default_factory=dict)


MailQueue = Callable[[AsyncSession, IdentityMail], Awaitable[None]]


def mail_queue_for(services: Services) -> MailQueue:
    """Queue account mails as `mail.send` jobs in the caller's transaction, so they leave
    only if it commits."""

    async def queue_identity_mail(session: AsyncSession, mail: IdentityMail) -> None:
        await queue_mail(
            services.jobs, session, to=mail.to, template=mail.template, context=mail.context
        )

    return queue_identity_mail


@purger("identity")
async def purge_expired(session: AsyncSession, now: datetime, settings: Settings) -> int:
    """Expired refresh tokens, single-use tokens and sessions, and sessions revoked longer
    ago than RETENTION_DAYS (kept that long for audit). Returns the rows deleted."""
    counts = await IdentityRepository(session).purge(
        now=now, revoked_before=now - timedelta(days=settings.retention_days)
    )
    log.info("identity_purged", **counts)
    return sum(counts.values())
