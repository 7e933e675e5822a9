"""The `mail.send` job: render, build, send; transient SMTP failures are retried."""

from __future__ import annotations

from typing import Any

from aiosmtplib import SMTPRecipientsRefused, SMTPResponseException
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import update

from slipway.platform.jobs.models import Job
from slipway.platform.jobs.registry import JobContext, JobResult, PermanentJobError, job
from slipway.platform.mail.message import UnknownTemplateError, build_message, render_mail


class MailPayload(BaseModel):
    to: list[str] = Field(min_length=1, max_length=50)
    template: str
    context: dict[str, Any] = {}


def _permanent(code: int) -> bool:
    # SMTP 4xx replies are transient (greylisting, full queue); 5xx will not change.
    return 500 <= code < 600


@job("mail.send")
async def send_mail(ctx: JobContext) -> JobResult:
    try:
        request = MailPayload.model_validate(ctx.payload)
        rendered = render_mail(request.template, request.context, ctx.services.settings)
    except (ValidationError, UnknownTemplateError) as error:
        raise PermanentJobError(f"cannot build the message: {error}") from error
    message = build_message(
        ctx.services.settings, request.to, rendered, message_key=str(ctx.job_id)
    )
    try:
        await ctx.services.mailer.send(message)
    except SMTPRecipientsRefused as error:
        if all(_permanent(refused.code) for refused in error.recipients):
            raise PermanentJobError(f"every recipient was refused: {error}") from error
        raise
    except SMTPResponseException as error:
        if _permanent(error.code):
            raise PermanentJobError(f"the SMTP server refused the message: {error}") from error
        raise
    # The context may hold single-use links (verification, password reset); once delivered
    # they have no business sitting in the jobs table until the retention purge.
    await ctx.session.execute(
        update(Job)
        .where(Job.id == ctx.job_id)
        .values(payload={"to": request.to, "template": request.template, "context": "[sent]"})
    )
    return {"message_id": str(message["Message-ID"]), "recipients": len(request.to)}
