"""Mail: the `mail.send` job against a real SMTP server (aiosmtpd on loopback), retries on
a transient refusal, no retry on a permanent one, the log backend, and every shipped
template rendering."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from slipway.app import create_app
from slipway.platform.mail.message import TEMPLATES_DIR, render_mail
from slipway.platform.mail.sender import LogMailer, SmtpMailer, open_mailer
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.platform.realtime_support import token_for, with_test_verifier
from tests.support.ports import LOOPBACK, free_port

STAFF = uuid.UUID("00000000-0000-4000-8000-00000000057a")
SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret-pass"


class RecordingHandler:
    """Accepts messages, after refusing the first `refuse` DATA commands with `code`."""

    def __init__(self, refuse: int = 0, code: str = "451 4.3.0 Try again later") -> None:
        self.refuse = refuse
        self.code = code
        self.attempts = 0
        self.envelopes: list[Envelope] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.attempts <= self.refuse:
            return self.code
        self.envelopes.append(envelope)
        return "250 2.0.0 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        if ok:
            self.logins.append(SMTP_USER)
        return AuthResult(success=ok)

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            assert isinstance(envelope.content, bytes)
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


@pytest.fixture
def backend() -> str:
    """Mail does not depend on the database engine; SQLite keeps these tests quick."""
    return "sqlite"


@pytest.fixture
def smtp_handler(request: pytest.FixtureRequest) -> RecordingHandler:
    """Parametrise indirectly with (refusals, reply) to make the server refuse first."""
    return RecordingHandler(*getattr(request, "param", ()))


@pytest.fixture
def smtp_server(smtp_handler: RecordingHandler) -> Iterator[Controller]:
    controller = Controller(
        smtp_handler,
        hostname=LOOPBACK,
        port=free_port(),
        authenticator=smtp_handler.authenticate,
        # Loopback test server without TLS: let the client log in over plain text.
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def settings_overrides(smtp_server: Controller) -> dict[str, Any]:
    return {
        "rate_limit_enabled": False,
        "jobs_backend": "embedded",
        "jobs_retry_backoff": 1,
        "jobs_retry_backoff_max": 1,
        "smtp_host": LOOPBACK,
        "smtp_port": smtp_server.port,
        "smtp_starttls": False,
        "smtp_user": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "mail_from": "Slipway Shop <shop@slipway.test>",
    }


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return with_test_verifier(create_app(settings))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as http,
    ):
        yield http


async def send_welcome(client: httpx.AsyncClient, to: list[str], name: str) -> str:
    response = await client.post(
        "/testing/jobs",
        json={
            "kind": "mail.send",
            "payload": {"to": to, "template": "welcome", "context": {"name": name}},
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["job_id"])


async def wait_for_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    headers = {"Authorization": f"Bearer {token_for(STAFF, 'staff')}"}
    while True:
        body: dict[str, Any] = (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if body["status"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_mail_arrives_with_headers_and_both_parts(
    client: httpx.AsyncClient, smtp_handler: RecordingHandler
) -> None:
    job_id = await send_welcome(client, ["ada@example.com"], "Ada <Lovelace>")

    job = await wait_for_job(client, job_id)

    assert job["status"] == "succeeded", job
    (message,) = smtp_handler.messages()
    (envelope,) = smtp_handler.envelopes
    assert envelope.mail_from == "shop@slipway.test"
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert smtp_handler.logins == [SMTP_USER]
    assert message["From"] == "Slipway Shop <shop@slipway.test>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Welcome to Slipway, Ada <Lovelace>"
    assert message["Message-ID"] == f"<{job_id}@slipway.test>"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "Hello Ada <Lovelace>," in text.get_content()
    # The HTML part escapes what the text part shows verbatim.
    assert "Hello Ada &lt;Lovelace&gt;," in html.get_content()
    assert "<Lovelace>" not in html.get_content()


async def test_delivered_mail_context_is_dropped_from_the_job_row(
    app: FastAPI, client: httpx.AsyncClient, smtp_handler: RecordingHandler
) -> None:
    """Mail contexts can carry single-use links; they must not outlive delivery."""
    from sqlalchemy import select

    from slipway.platform.jobs.models import Job

    job_id = await send_welcome(client, ["grace@example.com"], "Grace")
    assert (await wait_for_job(client, job_id))["status"] == "succeeded"

    async with app.state.services.session_factory() as session:
        payload = await session.scalar(select(Job.payload).where(Job.id == uuid.UUID(job_id)))
    assert payload == {"to": ["grace@example.com"], "template": "welcome", "context": "[sent]"}


@pytest.mark.parametrize("smtp_handler", [(1,)], indirect=True)
async def test_transient_refusal_is_retried_and_delivered(
    client: httpx.AsyncClient, smtp_handler: RecordingHandler
) -> None:
    job_id = await send_welcome(client, ["grace@example.com"], "Grace")

    job = await wait_for_job(client, job_id)

    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert smtp_handler.attempts == 2
    (message,) = smtp_handler.messages()
    assert message["To"] == "grace@example.com"


@pytest.mark.parametrize("smtp_handler", [(5, "550 5.7.1 Relaying denied")], indirect=True)
async def test_permanent_refusal_fails_without_retrying(
    client: httpx.AsyncClient, smtp_handler: RecordingHandler
) -> None:
    job_id = await send_welcome(client, ["nobody@example.com"], "Nobody")

    job = await wait_for_job(client, job_id)

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "Relaying denied" in job["error"]
    assert smtp_handler.attempts == 1
    assert smtp_handler.messages() == []


async def test_unknown_template_fails_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/testing/jobs",
        json={"kind": "mail.send", "payload": {"to": ["a@example.com"], "template": "nope"}},
    )
    job = await wait_for_job(client, response.json()["job_id"])

    assert job["status"] == "failed"
    assert job["attempts"] == 1
    assert "nope" in job["error"]


# --- backends and templates (no SMTP server needed) ----------------------------------------


def test_without_smtp_settings_mail_goes_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(environment="development")
    mailer = open_mailer(settings)
    assert isinstance(mailer, LogMailer)
    assert isinstance(open_mailer(make_settings(smtp_host="smtp.example.com")), SmtpMailer)
    rendered = render_mail("welcome", {"name": "Linus"}, settings)
    from slipway.platform.mail.message import build_message

    caplog.set_level(logging.INFO)
    asyncio.run(mailer.send(build_message(settings, ["linus@example.com"], rendered)))

    (record,) = [
        r for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "mail_logged"
    ]
    assert record.msg["mail_to"] == "linus@example.com"
    assert record.msg["subject"] == "Welcome to Slipway, Linus"
    assert "Hello Linus," in record.msg["body"]


def test_the_log_backend_keeps_bodies_out_of_production_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(environment="staging")
    rendered = render_mail(
        "password_reset", {"url": "https://x/reset?t=SECRET", "expires_minutes": 30}, settings
    )
    from slipway.platform.mail.message import build_message

    caplog.set_level(logging.INFO)
    asyncio.run(LogMailer(settings).send(build_message(settings, ["a@example.com"], rendered)))

    assert "SECRET" not in caplog.text
    assert "mail_logged" in caplog.text


SAMPLE_CONTEXTS: dict[str, dict[str, Any]] = {
    "welcome": {"name": "Ada"},
    "verify_email": {"name": "Ada", "url": "https://shop.test/verify?t=abc", "expires_hours": 48},
    "password_reset": {
        "name": "Ada",
        "url": "https://shop.test/reset?t=abc",
        "expires_minutes": 30,
    },
    "account_exists": {"url": "https://shop.test/reset"},
    "order_confirmation": {
        "order_id": "3f0c1e9a-0000-4000-8000-000000000001",
        "order_id_short": "3f0c1e9a",
        "status": "pending",
        "currency": "EUR",
        "total": "42.00",
        "lines": [{"product_id": 7, "quantity": 2, "unit_price": "21.00"}],
    },
}


def test_every_shipped_template_renders() -> None:
    shipped = sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir())
    assert shipped == sorted(SAMPLE_CONTEXTS)
    settings = make_settings()
    for name, context in SAMPLE_CONTEXTS.items():
        rendered = render_mail(name, context, settings)
        assert rendered.subject
        assert "\n" not in rendered.subject
        assert "<html" in rendered.html
        for value in context.values():
            if isinstance(value, str) and value.startswith("https://"):
                assert value in rendered.text
