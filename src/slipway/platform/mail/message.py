"""Render a message from its Jinja2 templates and build the MIME message.

Each message is a directory under `templates/`: `subject.txt`, `body.txt` and
`body.html` (which may extend `_layout.html`). HTML is autoescaped; an undefined variable
is an error, not an empty string.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from slipway.platform.settings import Settings

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
PARTS = ("subject.txt", "body.txt", "body.html")


class UnknownTemplateError(LookupError):
    """No such message template."""


@dataclass(frozen=True, slots=True)
class RenderedMail:
    subject: str
    text: str
    html: str


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def template_exists(name: str) -> bool:
    if not name or name.startswith(("_", ".")) or "/" in name or "\\" in name:
        return False
    return all((TEMPLATES_DIR / name / part).is_file() for part in PARTS)


def render_mail(name: str, context: Mapping[str, Any], settings: Settings) -> RenderedMail:
    """Render the subject, text and HTML parts of template `name`."""
    if not template_exists(name):
        raise UnknownTemplateError(name)
    env = _environment()
    values = {"app_name": settings.app_name, "base_url": settings.public_base_url, **context}
    try:
        subject, text, html = (env.get_template(f"{name}/{part}").render(values) for part in PARTS)
    except TemplateNotFound as error:
        raise UnknownTemplateError(name) from error
    # A header cannot hold a line break (header injection): one line, single spaces.
    return RenderedMail(" ".join(subject.split()), text, html)


def sender_domain(settings: Settings) -> str:
    address = parseaddr(settings.mail_from)[1]
    return address.rpartition("@")[2] or "slipway.local"


def build_message(
    settings: Settings,
    recipients: Sequence[str],
    rendered: RenderedMail,
    *,
    message_key: str | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text first, HTML preferred by clients).

    `message_key` makes the Message-ID deterministic (the job id), so a retried send
    after a lost worker carries the same id and receivers can drop the duplicate.
    """
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = rendered.subject
    message["Date"] = formatdate(usegmt=True)
    domain = sender_domain(settings)
    message["Message-ID"] = (
        f"<{message_key}@{domain}>" if message_key else make_msgid(domain=domain)
    )
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
