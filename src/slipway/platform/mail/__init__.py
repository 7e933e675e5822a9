"""Mail: Jinja2 templates (text and HTML), sent by the `mail.send` job through aiosmtplib,
or written to the log when SMTP is not configured.

    await queue_mail(services.jobs, session, to=user.email, template="verify_email",
                     context={"name": user.full_name, "url": link, "expires_hours": 48})
"""

from slipway.platform.mail.message import RenderedMail, build_message, render_mail
from slipway.platform.mail.sender import LogMailer, Mailer, SmtpMailer, open_mailer
from slipway.platform.mail.service import queue_mail

__all__ = [
    "LogMailer",
    "Mailer",
    "RenderedMail",
    "SmtpMailer",
    "build_message",
    "open_mailer",
    "queue_mail",
    "render_mail",
]
