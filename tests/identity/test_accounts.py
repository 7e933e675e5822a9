"""Registration, e-mail verification, the own-account endpoints and password storage."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select

from slipway.app import create_app
from slipway.identity.models import User
from slipway.identity.security import InsecureHashParametersError, PasswordHasher
from slipway.platform.settings import Settings
from tests.conftest import make_settings
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
)

REGISTER = "/api/v1/auth/register"


async def stored_user(app: FastAPI, email: str) -> User:
    async with app.state.services.session_factory() as session:
        return (await session.execute(select(User).where(User.email == email))).scalar_one()


async def test_register_normalises_the_email(client: httpx.AsyncClient, outbox: Outbox) -> None:
    await register(client, "  Mixed.Case@EXAMPLE.com ")

    account = await login_ok(client, "mixed.case@example.com")
    me = await client.get(ME, headers=account.headers)

    assert me.json()["email"] == "mixed.case@example.com"
    assert (await login(client, "MIXED.case@Example.COM")).status_code == 200


async def test_duplicate_registration_looks_like_a_new_one(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    first = await client.post(REGISTER, json={"email": "taken@example.com", "password": PASSWORD})
    again = await client.post(
        REGISTER, json={"email": "TAKEN@example.com", "password": "another password"}
    )

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    # The owner's password is untouched; the owner hears about the attempt instead.
    assert (await login(client, "taken@example.com")).status_code == 200
    assert (await login(client, "taken@example.com", "another password")).status_code == 401
    assert [m.template for m in outbox.mails] == ["verify_email", "account_exists"]


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short7!", "too short"),
        ("x" * 129, "too long"),
        ("policy@example.com", "the email"),
        ("POLICY@EXAMPLE.COM", "the email, other case"),
    ],
)
async def test_password_policy(client: httpx.AsyncClient, password: str, reason: str) -> None:
    response = await client.post(
        REGISTER, json={"email": "policy@example.com", "password": password}
    )

    assert response.status_code == 422, reason
    assert password not in response.text  # the input is never echoed
    assert (await login(client, "policy@example.com", password)).status_code == 401


async def test_password_length_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    await new_account(client, "eight@example.com", "8charsok")
    await new_account(client, "long@example.com", "p" * 128)


async def test_invalid_email_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(REGISTER, json={"email": "not-an-email", "password": PASSWORD})

    assert response.status_code == 422


async def test_email_verification_token_works_once(
    app: FastAPI, client: httpx.AsyncClient, outbox: Outbox
) -> None:
    account = await new_account(client, "verify@example.com")
    mail = outbox.last("verify_email", "verify@example.com")
    token = outbox.token("verify_email", "verify@example.com")
    assert mail.context["url"].endswith(f"/verify-email#token={token}")  # never in access logs
    assert (await client.get(ME, headers=account.headers)).json()["email_verified"] is False

    first = await client.post("/api/v1/auth/verify-email", json={"token": token})
    second = await client.post("/api/v1/auth/verify-email", json={"token": token})

    assert first.status_code == 204
    assert second.status_code == 400
    assert second.json()["error"]["code"] == "invalid_token"
    assert (await client.get(ME, headers=account.headers)).json()["email_verified"] is True


@pytest.mark.parametrize("token", ["", "junk", "0" * 32 + ".secret", "x" * 600])
async def test_bad_verification_tokens(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/api/v1/auth/verify-email", json={"token": token})

    assert response.status_code in (400, 422)


async def test_verification_token_with_a_wrong_secret_fails(
    client: httpx.AsyncClient, outbox: Outbox
) -> None:
    await register(client, "wrong-secret@example.com")
    token = outbox.token("verify_email", "wrong-secret@example.com")
    token_id, _, _ = token.partition(".")

    response = await client.post("/api/v1/auth/verify-email", json={"token": f"{token_id}.guessed"})

    assert response.status_code == 400
    assert (
        await client.post("/api/v1/auth/verify-email", json={"token": token})
    ).status_code == 204


async def test_read_and_update_me(client: httpx.AsyncClient) -> None:
    account = await new_account(client, "me@example.com")

    updated = await client.patch(ME, json={"full_name": "Ada Lovelace"}, headers=account.headers)

    assert updated.status_code == 200
    body = (await client.get(ME, headers=account.headers)).json()
    assert body["full_name"] == "Ada Lovelace"
    assert body["email"] == "me@example.com"
    assert "password_hash" not in body


@pytest.mark.parametrize(
    "field",
    [
        {"role": "admin"},
        {"is_active": False},
        {"email_verified": True},
        {"id": "00000000-0000-0000-0000-000000000000"},
        {"email": "other@example.com"},
        {"password_hash": "x"},
    ],
    ids=lambda f: next(iter(f)),
)
async def test_mass_assignment_is_rejected(
    client: httpx.AsyncClient, field: dict[str, Any]
) -> None:
    account = await new_account(client)
    before = (await client.get(ME, headers=account.headers)).json()

    response = await client.patch(ME, json={"full_name": "Eve", **field}, headers=account.headers)

    assert response.status_code == 422
    after = (await client.get(ME, headers=account.headers)).json()
    assert after == before
    assert after["role"] == "customer"


async def test_password_change_revokes_other_sessions(client: httpx.AsyncClient) -> None:
    current = await new_account(client, "changer@example.com")
    other = await login_ok(client, "changer@example.com")

    response = await client.post(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": "a brand new secret"},
        headers=current.headers,
    )

    assert response.status_code == 204
    assert_invalid_token(
        await client.post("/api/v1/auth/refresh", json={"refresh_token": other.refresh_token})
    )
    assert_invalid_token(await client.get(ME, headers=other.headers))
    # The session that made the change carries on.
    assert (await client.get(ME, headers=current.headers)).status_code == 200
    assert (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": current.refresh_token})
    ).status_code == 200
    assert (await login(client, "changer@example.com")).status_code == 401
    assert (await login(client, "changer@example.com", "a brand new secret")).status_code == 200


async def test_password_change_needs_the_current_password(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    response = await client.post(
        f"{ME}/password",
        json={"current_password": "not it", "new_password": "a brand new secret"},
        headers=account.headers,
    )

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "incorrect_password"
    assert (await login(client, account.email)).status_code == 200


async def test_new_password_follows_the_policy(client: httpx.AsyncClient) -> None:
    account = await new_account(client, "samesame@example.com")

    response = await client.post(
        f"{ME}/password",
        json={"current_password": PASSWORD, "new_password": "samesame@example.com"},
        headers=account.headers,
    )

    assert response.status_code == 422
    assert (await login(client, account.email)).status_code == 200


async def test_delete_me_deactivates_and_revokes(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await new_account(client, "leaving@example.com")
    other = await login_ok(client, "leaving@example.com")

    response = await client.delete(ME, headers=account.headers)

    assert response.status_code == 204
    for session in (account, other):
        assert_invalid_token(await client.get(ME, headers=session.headers))
    assert (await stored_user(app, "leaving@example.com")).is_active is False


# --- password storage --------------------------------------------------------------------


async def test_passwords_are_argon2id_with_owasp_parameters(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client, "stored@example.com")

    user = await stored_user(app, "stored@example.com")

    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in user.password_hash


async def test_hash_is_upgraded_at_login_when_parameters_change(
    app: FastAPI, client: httpx.AsyncClient, settings: Settings
) -> None:
    await register(client, "upgrade@example.com")
    stronger = create_app(
        make_settings(database_url=settings.database_url, password_hash_time_cost=3)
    )

    async with (
        LifespanManager(stronger, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as other,
    ):
        assert (await login(other, "upgrade@example.com")).status_code == 200

    user = await stored_user(app, "upgrade@example.com")
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=3,p=1$")
    assert (await login(client, "upgrade@example.com")).status_code == 200


def test_costs_below_owasp_are_refused() -> None:
    with pytest.raises(InsecureHashParametersError):
        PasswordHasher(make_settings(password_hash_memory_kib=19_456, password_hash_time_cost=1))
    PasswordHasher(make_settings(password_hash_memory_kib=47_104, password_hash_time_cost=1))


async def test_hashing_runs_off_the_event_loop(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = runtime_of(app).hasher
    threads: list[threading.Thread] = []
    password_hash = hasher._password_hash
    real_hash, real_verify = password_hash.hash, password_hash.verify_and_update

    def spy_hash(*args: Any, **kwargs: Any) -> str:
        threads.append(threading.current_thread())
        return real_hash(*args, **kwargs)

    def spy_verify(*args: Any, **kwargs: Any) -> tuple[bool, str | None]:
        threads.append(threading.current_thread())
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(password_hash, "hash", spy_hash)
    monkeypatch.setattr(password_hash, "verify_and_update", spy_verify)
    loop_thread = threading.current_thread()

    await new_account(client)
    await login(client, "unknown@example.com")

    assert len(threads) >= 4  # password + token at registration, login, dummy verify
    assert loop_thread not in threads


# 20 accounts from one test client IP: lift the per-IP auth budgets for this test only.
@pytest.mark.parametrize(
    "settings_overrides",
    [{"rate_limit_policies": {"login": "100/minute", "register": "100/hour"}}],
    ids=["lifted-limits"],
)
async def test_health_answers_during_a_login_storm(client: httpx.AsyncClient) -> None:
    """A functional check only: `test_hashing_runs_off_the_event_loop` proves where the
    work runs, and the health-p99-under-load figure belongs to the benchmark suite."""
    emails = [f"storm{i}@example.com" for i in range(20)]
    for email in emails:
        await register(client, email)

    storm = [asyncio.ensure_future(login(client, email)) for email in emails]
    answered_during_storm = 0
    while not all(task.done() for task in storm):
        await asyncio.sleep(0.005)
        response = await client.get("/health/live")
        assert response.status_code == 200
        answered_during_storm += not all(task.done() for task in storm)
    results = await asyncio.gather(*storm)

    assert [r.status_code for r in results] == [200] * 20
    assert answered_during_storm >= 3
