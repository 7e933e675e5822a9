"""OWASP API2:2023 Broken Authentication.

- every operation the schema marks as authenticated refuses a missing or forged token with
  the same 401 (`WWW-Authenticate: Bearer`), before looking at the request body;
- tokens are short-lived JWTs on a pinned algorithm with every claim checked: `alg: none`,
  another key, an expired token or another audience are all refused;
- passwords are stored as Argon2id hashes, and a failed login never says whether the account
  exists;
- a refresh token works once: replaying it revokes its whole family.
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from slipway.identity.models import User
from slipway.platform.settings import Settings
from tests.identity.conftest import (
    assert_invalid_token,
    claims_of,
    forge,
    timestamp,
    unsigned_token,
)
from tests.owasp.conftest import PASSWORD, fill_path, new_customer, operations

ME = "/api/v1/users/me"
#: Public operations that show more to staff: anonymous is fine, a bad token is still a 401.
OPTIONAL_AUTH = {("GET", "/api/v1/products")}


def _secured(app: FastAPI) -> list[tuple[str, str, bool]]:
    """(method, concrete path, anonymous allowed) of every operation declaring security."""
    return [
        (method, fill_path(path, operation), (method, path) in OPTIONAL_AUTH)
        for method, path, operation in operations(app)
        if operation.get("security")
    ]


async def test_every_secured_operation_refuses_anonymous_and_forged_tokens(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    secured = _secured(app)
    customer = await new_customer(client, app)
    forged = forge(settings, claims_of(customer.access_token), aud="someone-else")

    assert len(secured) >= 20, secured  # the schema documents its security requirements
    for method, path, anonymous_ok in secured:
        anonymous = await client.request(method, path, json={})
        if anonymous_ok:
            assert anonymous.status_code == 200, (method, path)
        else:
            assert_invalid_token(anonymous)
        for token in ("not-a-jwt", forged):
            response = await client.request(
                method, path, json={}, headers={"Authorization": f"Bearer {token}"}
            )
            assert_invalid_token(response)


@pytest.mark.parametrize(
    "tamper",
    ["alg-none", "other-key", "expired", "other-audience", "other-issuer", "no-expiry"],
)
async def test_tampered_tokens_are_refused(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, tamper: str
) -> None:
    customer = await new_customer(client, app)
    claims = claims_of(customer.access_token)
    tokens = {
        "alg-none": lambda: unsigned_token(claims),
        "other-key": lambda: forge(
            settings.model_copy(update={"secret_key": settings.secret_key.__class__("x" * 64)}),
            claims,
        ),
        "expired": lambda: forge(
            settings,
            claims,
            iat=timestamp(-timedelta(minutes=30)),
            exp=timestamp(-timedelta(minutes=15)),
        ),
        "other-audience": lambda: forge(settings, claims, aud="another-api"),
        "other-issuer": lambda: forge(settings, claims, iss="https://evil.example"),
        "no-expiry": lambda: forge(settings, claims, exp=None),
    }

    response = await client.get(ME, headers={"Authorization": f"Bearer {tokens[tamper]()}"})

    assert_invalid_token(response)
    # The genuine token still works: the refusal is about the tampering.
    assert (await client.get(ME, headers=customer.headers)).status_code == 200


async def test_access_tokens_are_short_lived(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings
) -> None:
    customer = await new_customer(client, app)
    claims = claims_of(customer.access_token)

    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == settings.access_token_expire_minutes * 60
    assert lifetime <= 3600
    assert {"sub", "exp", "iat", "jti", "aud", "iss"} <= set(claims)


async def test_passwords_are_stored_as_argon2id(client: httpx.AsyncClient, app: FastAPI) -> None:
    customer = await new_customer(client, app)
    factory = app.state.services.session_factory
    async with factory() as session:
        stored = await session.scalar(
            select(User.password_hash).where(User.email == customer.email)
        )

    assert stored is not None
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_failed_logins_do_not_reveal_whether_the_account_exists(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)

    wrong_password = await client.post(
        "/api/v1/auth/login", data={"username": customer.email, "password": "wrong password 1"}
    )
    unknown_user = await client.post(
        "/api/v1/auth/login",
        data={"username": "nobody-here@example.com", "password": "wrong password 1"},
    )

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json()["error"]["code"] == unknown_user.json()["error"]["code"]
    assert wrong_password.json()["error"]["message"] == unknown_user.json()["error"]["message"]


async def test_a_replayed_refresh_token_revokes_its_family(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    customer = await new_customer(client, app)
    first = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": customer.refresh_token}
    )
    assert first.status_code == 200, first.text
    rotated = first.json()

    replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": customer.refresh_token}
    )
    after_replay = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}
    )

    assert_invalid_token(replay)
    # The thief's rotated token dies with the family.
    assert_invalid_token(after_replay)
