"""`services.mailer`: SMTP through aiosmtplib, or the log when SMTP is not configured."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

import aiosmtplib
import structlog

from slipway.platform.settings import Environment, Settings

log = structlog.get_logger("slipway.mail")


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=password,
            use_tls=settings.smtp_tls,
            # True requires STARTTLS (never silently plain text); False never tries it.
            start_tls=False if settings.smtp_tls else settings.smtp_starttls,
            timeout=settings.smtp_timeout,
        )
        log.info("mail_sent", message_id=message["Message-ID"], host=settings.smtp_host)


class LogMailer:
    """Writes mail to the log. The body (it may hold reset links) only in development
    and testing; elsewhere the envelope only."""

    def __init__(self, settings: Settings) -> None:
        self._with_body = settings.environment in (Environment.DEVELOPMENT, Environment.TESTING)

    async def send(self, message: EmailMessage) -> None:
        body = message.get_body(preferencelist=("plain",))
        log.info(
            "mail_logged",
            message_id=message["Message-ID"],
            mail_to=message["To"],
            subject=message["Subject"],
            body=body.get_content() if self._with_body and body is not None else None,
        )


def open_mailer(settings: Settings) -> Mailer:
    if settings.mail_backend == "smtp" or (settings.mail_backend == "auto" and settings.smtp_host):
        return SmtpMailer(settings)
    if settings.environment in (Environment.STAGING, Environment.PRODUCTION):
        log.warning("mail_backend_log", reason="SMTP_HOST is not set; mail is only logged")
    return LogMailer(settings)
