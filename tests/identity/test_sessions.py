"""Login, refresh-token rotation and theft detection, logout, revocation latency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from slipway.app import create_app
from slipway.identity.models import AuthSession
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.identity.conftest import (
    LOGIN,
    ME,
    PASSWORD,
    REFRESH,
    Account,
    assert_invalid_token,
    login,
    new_account,
    register,
)


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def test_login_returns_oauth2_token_pair_and_refresh_cookie(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    await register(client, "cookie@example.com")

    response = await login(client, "cookie@example.com")

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert body["refresh_token"].startswith("rt_")
    assert body["refresh_expires_in"] == settings.refresh_token_expire_days * 86400
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"refresh_token={body['refresh_token']};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/api/v1/auth"} <= attributes


async def test_login_form_is_oauth2_password_flow(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    flows = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == LOGIN
    content = schema["paths"][LOGIN]["post"]["requestBody"]["content"]
    assert "application/x-www-form-urlencoded" in content


async def test_wrong_password_and_unknown_email_get_the_same_401(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "known@example.com")

    wrong = await login(client, "known@example.com", "wrong password")
    unknown = await login(client, "nobody@example.com", "wrong password")

    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "invalid_credentials"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_refresh_rotates_and_old_token_is_spent(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    first = await refresh(client, account.refresh_token)

    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != account.refresh_token
    assert (
        await client.get(ME, headers={"Authorization": f"Bearer {rotated['access_token']}"})
    ).status_code == 200
    second = await refresh(client, rotated["refresh_token"])
    assert second.status_code == 200


async def test_refresh_from_the_cookie(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    response = await client.post(
        REFRESH, headers={"Cookie": f"refresh_token={account.refresh_token}"}
    )

    assert response.status_code == 200
    assert response.json()["refresh_token"] in response.headers["set-cookie"]


async def test_refresh_without_token_is_401(client: httpx.AsyncClient) -> None:
    assert_invalid_token(await client.post(REFRESH))
    assert_invalid_token(await refresh(client, "rt_" + "x" * 43))


async def test_reusing_a_rotated_refresh_token_revokes_the_family(
    client: httpx.AsyncClient,
) -> None:
    account = await new_account(client)
    newest = (await refresh(client, account.refresh_token)).json()

    reuse = await refresh(client, account.refresh_token)

    assert_invalid_token(reuse)
    assert "refresh_token=" in reuse.headers["set-cookie"]  # the cookie is cleared
    # The legitimate holder's newest tokens died with the family.
    assert_invalid_token(await refresh(client, newest["refresh_token"]))
    assert_invalid_token(
        await client.get(ME, headers={"Authorization": f"Bearer {newest['access_token']}"})
    )


async def test_reuse_revocation_is_committed(app: Any, client: httpx.AsyncClient) -> None:
    account = await new_account(client)
    await refresh(client, account.refresh_token)

    await refresh(client, account.refresh_token)

    async with app.state.services.session_factory() as session:
        reasons = (await session.execute(select(AuthSession.revoked_reason))).scalars().all()
    assert reasons == ["refresh_token_reuse"]


async def test_concurrent_refreshes_with_one_token_issue_at_most_one_pair(
    client: httpx.AsyncClient,
) -> None:
    account = await new_account(client)

    results = await asyncio.gather(*(refresh(client, account.refresh_token) for _ in range(5)))

    assert sum(r.status_code == 200 for r in results) <= 1
    assert all(r.status_code in (200, 401) for r in results)


async def test_logout_revokes_refresh_token_too(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    response = await client.post("/api/v1/auth/logout", headers=account.headers)

    assert response.status_code == 204
    assert_invalid_token(await refresh(client, account.refresh_token))


async def test_logout_all_revokes_every_session(client: httpx.AsyncClient) -> None:
    first = await new_account(client)
    second_body = (await login(client, first.email)).json()

    response = await client.post("/api/v1/auth/logout-all", headers=first.headers)

    assert response.status_code == 204
    for token in (first.access_token, second_body["access_token"]):
        assert_invalid_token(await client.get(ME, headers={"Authorization": f"Bearer {token}"}))
    assert_invalid_token(await refresh(client, second_body["refresh_token"]))


async def test_logout_needs_a_valid_access_token(client: httpx.AsyncClient) -> None:
    assert_invalid_token(await client.post("/api/v1/auth/logout"))


async def test_deactivated_account_cannot_log_in(client: httpx.AsyncClient) -> None:
    account = await new_account(client)
    assert (await client.delete(ME, headers=account.headers)).status_code == 204

    response = await login(client, account.email)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert_invalid_token(await client.get(ME, headers=account.headers))
    assert_invalid_token(await refresh(client, account.refresh_token))


class TestProgressiveSlowDown:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"login_slowdown_after_failures": 3, "login_slowdown_max_seconds": 2}

    async def test_failures_slow_down_the_account_but_not_forever(
        self, client: httpx.AsyncClient
    ) -> None:
        await register(client, "target@example.com")
        for _ in range(3):
            assert (await login(client, "target@example.com", "guess")).status_code == 401

        slowed = await login(client, "target@example.com", PASSWORD)

        # Even the right password waits: the attacker cannot tell it was right.
        assert slowed.status_code == 429
        assert slowed.json()["error"]["code"] == "login_slowed_down"
        assert 1 <= int(slowed.headers["retry-after"]) <= 2
        await asyncio.sleep(int(slowed.headers["retry-after"]) + 0.2)
        assert (await login(client, "target@example.com", PASSWORD)).status_code == 200

    async def test_unknown_addresses_are_slowed_down_alike(self, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await login(client, "ghost@example.com", "guess")).status_code == 401

        assert (await login(client, "ghost@example.com", "guess")).status_code == 429


# --- revocation seen by another instance --------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"session_check_cache_seconds": 1}


@pytest.fixture
async def second_instance(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another app process on the same database, with its own session-check cache."""
    other = create_app(
        make_settings(
            **settings.model_dump(include={"database_url"}), session_check_cache_seconds=1
        )
    )
    async with (
        LifespanManager(other, startup_timeout=60, shutdown_timeout=60) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50001)),
            base_url="http://testserver",
        ) as http,
    ):
        yield http


async def test_revocation_reaches_other_instances_within_the_cache_window(
    client: httpx.AsyncClient, second_instance: httpx.AsyncClient
) -> None:
    account: Account = await new_account(client)
    # Instance two has checked (and cached) the live session.
    assert (await second_instance.get(ME, headers=account.headers)).status_code == 200

    assert (await client.post("/api/v1/auth/logout", headers=account.headers)).status_code == 204

    assert_invalid_token(await client.get(ME, headers=account.headers))  # this instance: now
    deadline = asyncio.get_running_loop().time() + 1.5
    status = 200
    while status == 200 and asyncio.get_running_loop().time() < deadline:
        status = (await second_instance.get(ME, headers=account.headers)).status_code
        await asyncio.sleep(0.1)
    assert status == 401
