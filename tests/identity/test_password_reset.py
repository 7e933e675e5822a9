"""Password reset: reveals nothing, costs the same either way, tokens work once, and the
mail really arrives at an SMTP server."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from fastapi import FastAPI
from sqlalchemy import select, update

from slipway.identity.models import OneTimeToken
from tests.identity.conftest import (
    ME,
    PASSWORD,
    Outbox,
    assert_invalid_token,
    login,
    login_ok,
    new_account,
    register,
    runtime_of,
    token_from_link,
)
from tests.support.ports import LOOPBACK, free_port

REQUEST = "/api/v1/auth/password-reset/request"
CONFIRM = "/api/v1/auth/password-reset/confirm"
NEW_PASSWORD = "a completely new one"


async def test_request_is_identical_for_known_and_unknown_addresses(
    app: FastAPI, client: httpx.AsyncClient, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client, "known@example.com")
    hasher = runtime_of(app).hasher
    hashed: list[str] = []
    real_hash = hasher.hash

    async def spy_hash(password: str) -> str:
        hashed.append(password)
        return await real_hash(password)

    monkeypatch.setattr(hasher, "hash", spy_hash)

    known = await client.post(REQUEST, json={"email": "known@example.com"})
    known_calls = len(hashed)
    unknown = await client.post(REQUEST, json={"email": "unknown@example.com"})

    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    assert set(known.headers) == set(unknown.headers)
    # The same Argon2 work on both paths: one hash each.
    assert known_calls == 1
    assert len(hashed) == 2
    assert [m.to for m in outbox.mails if m.template == "password_reset"] == ["known@example.com"]


async def test_reset_token_works_once_and_revokes_every_session(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    account = await new_account(client, "forgetful@example.com")
    await client.post(REQUEST, json={"email": "FORGETFUL@example.com"})
    token = outbox.token("password_reset", "forgetful@example.com")

    first = await client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    second = await client.post(CONFIRM, json={"token": token, "new_password": "yet another one"})

    assert first.status_code == 204
    assert second.status_code == 400
    assert second.json()["error"]["message"] == "Invalid or expired token."
    assert_invalid_token(await client.get(ME, headers=account.headers))
    assert_invalid_token(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    )
    assert (await login(client, account.email)).status_code == 401
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200


async def test_rejected_new_password_keeps_the_token_usable(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "policy-reset@example.com")
    await client.post(REQUEST, json={"email": "policy-reset@example.com"})
    token = outbox.token("password_reset", "policy-reset@example.com")

    weak = await client.post(
        CONFIRM, json={"token": token, "new_password": "policy-reset@example.com"}
    )

    assert weak.status_code == 422
    assert (
        await client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
    ).status_code == 204


async def test_a_newer_request_invalidates_the_older_token(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "twice@example.com")
    await client.post(REQUEST, json={"email": "twice@example.com"})
    older = outbox.token("password_reset", "twice@example.com")
    await client.post(REQUEST, json={"email": "twice@example.com"})
    newer = outbox.token("password_reset", "twice@example.com")

    stale = await client.post(CONFIRM, json={"token": older, "new_password": NEW_PASSWORD})

    assert stale.status_code == 400
    assert (
        await client.post(CONFIRM, json={"token": newer, "new_password": NEW_PASSWORD})
    ).status_code == 204


async def test_expired_reset_token_fails(
    app: FastAPI, client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "late@example.com")
    await client.post(REQUEST, json={"email": "late@example.com"})
    token = outbox.token("password_reset", "late@example.com")
    async with app.state.services.session_factory() as session, session.begin():
        await session.execute(
            update(OneTimeToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )

    response = await client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})

    assert response.status_code == 400
    assert (await login(client, "late@example.com")).status_code == 200


async def test_reset_token_expires_after_30_minutes_by_default(
    app: FastAPI, client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "ttl@example.com")
    before = datetime.now(UTC)
    await client.post(REQUEST, json={"email": "ttl@example.com"})

    async with app.state.services.session_factory() as session:
        row = (
            await session.execute(
                select(OneTimeToken).where(OneTimeToken.purpose == "password_reset")
            )
        ).scalar_one()
    expires_at = row.expires_at.replace(tzinfo=UTC)
    assert timedelta(minutes=29) < expires_at - before <= timedelta(minutes=30, seconds=5)
    assert outbox.token("password_reset", "ttl@example.com").split(".")[1] not in row.secret_hash


async def test_verification_token_is_not_a_reset_token(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "crossed@example.com")
    verify_token = outbox.token("verify_email", "crossed@example.com")

    response = await client.post(
        CONFIRM, json={"token": verify_token, "new_password": NEW_PASSWORD}
    )

    assert response.status_code == 400
    assert (await login(client, "crossed@example.com")).status_code == 200


# --- the real mail ------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    async def wait_for(self, to: str, timeout: float = 15.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if message["To"] == to:
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no mail to {to} within {timeout}s: {self.messages}")


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname=LOOPBACK, port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


class TestResetMailOverSmtp:
    @pytest.fixture
    def settings_overrides(self, smtp_server: tuple[Inbox, int]) -> dict[str, Any]:
        return {
            "mail_backend": "smtp",
            "smtp_host": LOOPBACK,
            "smtp_port": smtp_server[1],
            "smtp_starttls": False,
            "mail_from": "Slipway <no-reply@slipway.test>",
        }

    async def test_reset_mail_arrives_and_its_token_works_once(
        self, client: httpx.AsyncClient, smtp_server: tuple[Inbox, int]
    ) -> None:
        inbox, _ = smtp_server
        await register(client, "mailbox@example.com")

        response = await client.post(REQUEST, json={"email": "mailbox@example.com"})

        assert response.status_code == 202
        reset = None
        deadline = time.monotonic() + 15
        while reset is None and time.monotonic() < deadline:
            await inbox.wait_for("mailbox@example.com")
            reset = next(
                (m for m in inbox.messages if "password" in str(m["Subject"]).lower()), None
            )
            await asyncio.sleep(0.05)
        assert reset is not None
        assert reset["From"] == "Slipway <no-reply@slipway.test>"
        text = reset.get_body(preferencelist=("plain",))
        html = reset.get_body(preferencelist=("html",))
        assert text is not None
        assert html is not None
        token = token_from_link(text.get_content())
        assert token in html.get_content()

        first = await client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})
        second = await client.post(CONFIRM, json={"token": token, "new_password": NEW_PASSWORD})

        assert first.status_code == 204
        assert second.status_code == 400
        await login_ok(client, "mailbox@example.com", NEW_PASSWORD)

    async def test_verification_mail_arrives(
        self, client: httpx.AsyncClient, smtp_server: tuple[Inbox, int]
    ) -> None:
        inbox, _ = smtp_server

        await register(client, "newcomer@example.com")

        message = await inbox.wait_for("newcomer@example.com")
        text = message.get_body(preferencelist=("plain",))
        assert text is not None
        token = token_from_link(text.get_content())
        verify = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert verify.status_code == 204
        account = await login_ok(client, "newcomer@example.com", PASSWORD)
        assert (await client.get(ME, headers=account.headers)).json()["email_verified"] is True
