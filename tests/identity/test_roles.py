"""Roles: function-level (403) and object-level (404) authorization, admin operations."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from slipway.identity.models import Role
from tests.identity.conftest import (
    ME,
    assert_invalid_token,
    claims_of,
    login,
    new_account,
    new_admin,
    set_role,
)

USERS = "/api/v1/users"


async def test_customer_calling_admin_endpoints_gets_403(client: httpx.AsyncClient) -> None:
    customer = await new_account(client)
    target = await new_account(client)
    target_id = claims_of(target.access_token)["sub"]

    responses = [
        await client.get(USERS, headers=customer.headers),
        await client.patch(
            f"{USERS}/{target_id}/role", json={"role": "admin"}, headers=customer.headers
        ),
        await client.post(f"{USERS}/{target_id}/deactivate", headers=customer.headers),
    ]

    for response in responses:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    assert (await client.get(ME, headers=target.headers)).json()["role"] == "customer"


async def test_admin_endpoints_need_authentication(client: httpx.AsyncClient) -> None:
    assert_invalid_token(await client.get(USERS))


async def test_customer_reading_another_user_gets_404(client: httpx.AsyncClient) -> None:
    customer = await new_account(client)
    other = await new_account(client)
    other_id = claims_of(other.access_token)["sub"]
    own_id = claims_of(customer.access_token)["sub"]

    response = await client.get(f"{USERS}/{other_id}", headers=customer.headers)
    missing = await client.get(
        f"{USERS}/00000000-0000-4000-8000-000000000000", headers=customer.headers
    )

    # Same answer as for an id that does not exist: ids cannot be probed.
    assert response.status_code == missing.status_code == 404
    assert response.json()["error"]["code"] == missing.json()["error"]["code"]
    own = await client.get(f"{USERS}/{own_id}", headers=customer.headers)
    assert own.status_code == 200
    assert own.json()["email"] == customer.email


async def test_staff_can_read_other_users(app: FastAPI, client: httpx.AsyncClient) -> None:
    staff = await new_account(client)
    await set_role(app, staff.email, Role.STAFF)
    other = await new_account(client)

    response = await client.get(
        f"{USERS}/{claims_of(other.access_token)['sub']}", headers=staff.headers
    )

    assert response.status_code == 200
    assert response.json()["email"] == other.email
    assert (await client.get(USERS, headers=staff.headers)).status_code == 403


async def test_admin_lists_users_page_by_page(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await new_admin(client, app)
    for _ in range(3):
        await new_account(client)

    first = await client.get(USERS, params={"limit": 2}, headers=admin.headers)
    assert first.status_code == 200
    page = first.json()
    second = await client.get(
        USERS, params={"limit": 2, "cursor": page["next_cursor"]}, headers=admin.headers
    )

    emails = [u["email"] for u in page["items"]] + [u["email"] for u in second.json()["items"]]
    assert len(emails) == len(set(emails)) == 4
    assert second.json()["next_cursor"] is None
    admins = await client.get(USERS, params={"role": "admin"}, headers=admin.headers)
    assert [u["email"] for u in admins.json()["items"]] == [admin.email]
    bad = await client.get(USERS, params={"cursor": "forged"}, headers=admin.headers)
    assert bad.status_code == 422


async def test_role_change_applies_to_live_sessions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await new_admin(client, app)
    promoted = await new_account(client)
    promoted_id = claims_of(promoted.access_token)["sub"]
    assert (await client.get(USERS, headers=promoted.headers)).status_code == 403

    response = await client.patch(
        f"{USERS}/{promoted_id}/role", json={"role": "admin"}, headers=admin.headers
    )

    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    # The same access token (its role claim still says customer) now has admin rights:
    # authorization uses the role stored now, not the one in the token.
    assert (await client.get(USERS, headers=promoted.headers)).status_code == 200


async def test_admin_cannot_demote_or_deactivate_themselves(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    admin = await new_admin(client, app)
    admin_id = claims_of(admin.access_token)["sub"]

    demote = await client.patch(
        f"{USERS}/{admin_id}/role", json={"role": "customer"}, headers=admin.headers
    )
    deactivate = await client.post(f"{USERS}/{admin_id}/deactivate", headers=admin.headers)

    assert demote.status_code == deactivate.status_code == 409
    assert (await client.get(ME, headers=admin.headers)).json()["role"] == "admin"


async def test_admin_deactivates_a_user(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await new_admin(client, app)
    user = await new_account(client)

    response = await client.post(
        f"{USERS}/{claims_of(user.access_token)['sub']}/deactivate", headers=admin.headers
    )

    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert_invalid_token(await client.get(ME, headers=user.headers))
    assert (await login(client, user.email)).status_code == 401


async def test_unknown_role_is_422(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await new_admin(client, app)
    user = await new_account(client)

    response = await client.patch(
        f"{USERS}/{claims_of(user.access_token)['sub']}/role",
        json={"role": "superuser"},
        headers=admin.headers,
    )

    assert response.status_code == 422
