"""Identity test helpers: accounts made through the API, captured account mails, and
tokens forged with the app's own keys (to prove each claim check on its own)."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.models import Role, User
from slipway.identity.runtime import IdentityRuntime
from slipway.identity.tasks import IdentityMail
from slipway.identity.tokens import load_key_material
from slipway.platform.settings import Settings

PASSWORD = "correct horse battery"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
ME = "/api/v1/users/me"
INVALID_TOKEN_MESSAGE = "Invalid or expired token."


@dataclass
class Outbox:
    """Account mails the app queued, instead of the (not yet wired) mail transport."""

    mails: list[IdentityMail] = field(default_factory=list)

    async def queue(self, _session: AsyncSession, mail: IdentityMail) -> None:
        self.mails.append(mail)

    def last(self, template: str, to: str) -> IdentityMail:
        for mail in reversed(self.mails):
            if mail.template == template and mail.to == to:
                return mail
        raise AssertionError(f"no {template} mail to {to}: {self.mails}")

    def token(self, template: str, to: str) -> str:
        """The token of the link in the last such mail."""
        return token_from_link(self.last(template, to).context["url"])


def token_from_link(text: str) -> str:
    match = re.search(r"#token=([A-Za-z0-9_.\-]+)", text)
    assert match, text
    return match.group(1)


def runtime_of(app: FastAPI) -> IdentityRuntime:
    runtime: IdentityRuntime = app.state.identity
    return runtime


@pytest.fixture
async def outbox(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[Outbox]:
    box = Outbox()
    runtime = runtime_of(app)
    original = runtime.mail_queue
    runtime.mail_queue = box.queue
    yield box
    runtime.mail_queue = original


@dataclass
class Account:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> None:
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": password}
    )
    assert response.status_code == 202, response.text


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post(LOGIN, data={"username": email, "password": password})


async def login_ok(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> Account:
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(email, password, body["access_token"], body["refresh_token"])


async def new_account(
    client: httpx.AsyncClient, email: str | None = None, password: str = PASSWORD
) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    await register(client, email, password)
    return await login_ok(client, email, password)


async def set_role(app: FastAPI, email: str, role: Role) -> None:
    """Promote directly in the database (the first admin comes from the CLI)."""
    factory = app.state.services.session_factory
    async with factory() as session, session.begin():
        await session.execute(update(User).where(User.email == email).values(role=role.value))


async def new_admin(client: httpx.AsyncClient, app: FastAPI) -> Account:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await register(client, email)
    await set_role(app, email, Role.ADMIN)
    return await login_ok(client, email)


def assert_invalid_token(response: httpx.Response) -> None:
    """Every token failure looks the same: 401, Bearer challenge, the envelope."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "invalid_token"
    assert error["message"] == INVALID_TOKEN_MESSAGE
    assert error["request_id"] == response.headers["x-request-id"]


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(settings: Settings, claims: dict[str, Any], **overrides: Any) -> str:
    """A correctly signed token with changed claims (None deletes a claim)."""
    payload = {**claims, **overrides}
    payload = {key: value for key, value in payload.items() if value is not None}
    keys = load_key_material(settings)
    return jwt.encode(payload, keys.signing_key, algorithm=keys.algorithm)


def timestamp(delta: timedelta) -> int:
    return int((datetime.now(UTC) + delta).timestamp())


def unsigned_token(claims: dict[str, Any]) -> str:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."
