"""`slipway users create-admin`, run as an operator runs it (a child process)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.identity.conftest import ME, login, login_ok, register
from tests.integration.conftest import run_slipway, slipway_env

ADMIN_PASSWORD = "an admin passphrase"


def create_admin(database_url: str, tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = run_slipway(
        ["users", "create-admin", *args],
        cwd=tmp_path,
        env=slipway_env(DATABASE_URL=database_url, ENVIRONMENT="testing", **env),
    )
    return result.returncode, result.stdout, result.stderr


async def test_admin_password_from_the_environment(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    code, out, err = create_admin(
        database_url, tmp_path, "--email", "Root@Example.com", SLIPWAY_ADMIN_PASSWORD=ADMIN_PASSWORD
    )

    assert code == 0, err
    assert out.startswith("admin created: ")
    admin = await login_ok(client, "root@example.com", ADMIN_PASSWORD)
    me = (await client.get(ME, headers=admin.headers)).json()
    assert me["role"] == "admin"
    assert me["email_verified"] is True
    assert ADMIN_PASSWORD not in out + err


async def test_admin_password_from_a_file(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    secret = tmp_path / "admin-password"
    secret.write_text(ADMIN_PASSWORD + "\n")

    code, _, err = create_admin(
        database_url, tmp_path, "--email", "file@example.com", "--password-file", str(secret)
    )

    assert code == 0, err
    assert (await login(client, "file@example.com", ADMIN_PASSWORD)).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_there_is_no_default_password(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    code, _, err = create_admin(database_url, tmp_path, "--email", "nopass@example.com")

    assert code == 2
    assert "SLIPWAY_ADMIN_PASSWORD" in err
    assert (await login(client, "nopass@example.com", "")).status_code in (401, 422)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_weak_password_is_refused(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    code, _, err = create_admin(
        database_url, tmp_path, "--email", "weak@example.com", SLIPWAY_ADMIN_PASSWORD="short"
    )

    assert code == 1
    assert "password" in err
    assert (await login(client, "weak@example.com", "short")).status_code == 401


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_existing_account_needs_promote(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    await register(client, "existing@example.com")

    refused = create_admin(
        database_url,
        tmp_path,
        "--email",
        "existing@example.com",
        SLIPWAY_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    promoted = create_admin(database_url, tmp_path, "--email", "existing@example.com", "--promote")

    assert refused[0] == 1
    assert "--promote" in refused[2]
    assert promoted[0] == 0, promoted[2]
    assert promoted[1].startswith("admin promoted: ")
    account = await login_ok(client, "existing@example.com")  # the password is unchanged
    assert (await client.get(ME, headers=account.headers)).json()["role"] == "admin"
