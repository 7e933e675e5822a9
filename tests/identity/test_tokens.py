"""Access-token verification: each forged, stale or misused token is a plain 401."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi import FastAPI

from slipway.identity.models import Role
from slipway.identity.runtime import token_verifier
from slipway.identity.tokens import AccessTokenCodec, TokenConfigurationError
from slipway.platform.events import get_token_verifier
from slipway.platform.settings import Settings
from tests.conftest import make_settings
from tests.identity.conftest import (
    LOGIN,
    ME,
    REFRESH,
    assert_invalid_token,
    b64,
    claims_of,
    forge,
    new_account,
    timestamp,
    unsigned_token,
)


async def me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get(ME, headers={"Authorization": f"Bearer {token}"})


async def test_valid_access_token_carries_every_claim(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    account = await new_account(client)

    claims = claims_of(account.access_token)

    assert set(claims) >= {"sub", "exp", "iat", "nbf", "jti", "iss", "aud", "typ", "role", "sid"}
    assert claims["typ"] == "access"
    assert claims["role"] == "customer"
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["exp"] - claims["iat"] == settings.access_token_expire_minutes * 60 == 900
    assert (await me(client, account.access_token)).status_code == 200


async def test_missing_or_malformed_authorization_is_401(client: httpx.AsyncClient) -> None:
    assert_invalid_token(await client.get(ME))
    assert_invalid_token(await client.get(ME, headers={"Authorization": "Bearer"}))
    assert_invalid_token(await client.get(ME, headers={"Authorization": "Basic dXNlcjpwdw=="}))
    assert_invalid_token(await me(client, "not-a-jwt"))
    assert_invalid_token(await me(client, "a" * 5000))


async def test_alg_none_is_rejected(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    assert_invalid_token(await me(client, unsigned_token(claims_of(account.access_token))))


async def test_tampered_payload_is_rejected(client: httpx.AsyncClient) -> None:
    account = await new_account(client)
    header, _, signature = account.access_token.split(".")
    claims = claims_of(account.access_token) | {"role": "admin"}

    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"

    assert_invalid_token(await me(client, tampered))


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        # Offsets, resolved when the test runs: a collection-time timestamp goes stale in
        # a long suite (nbf five minutes ahead is in the past by then).
        ("exp", -timedelta(minutes=1)),
        ("nbf", timedelta(minutes=5)),
        ("iat", timedelta(minutes=5)),
        ("aud", "some-other-api"),
        ("iss", "someone-else"),
        ("typ", "refresh"),
        ("sub", None),
        ("sid", None),
        ("jti", None),
        ("aud", None),
        ("iss", None),
        ("exp", None),
    ],
    ids=str,
)
async def test_correctly_signed_token_with_bad_claim_is_rejected(
    client: httpx.AsyncClient, settings: Settings, claim: str, value: Any
) -> None:
    account = await new_account(client)
    claims = claims_of(account.access_token)
    # The unmodified re-signed token works, so only the claim can be the reason.
    assert (await me(client, forge(settings, claims))).status_code == 200

    if isinstance(value, timedelta):
        value = timestamp(value)
    assert_invalid_token(await me(client, forge(settings, claims, **{claim: value})))


async def test_token_signed_with_another_secret_is_rejected(client: httpx.AsyncClient) -> None:

    account = await new_account(client)

    forged = jwt.encode(claims_of(account.access_token), "x" * 64, algorithm="HS256")

    assert_invalid_token(await me(client, forged))


async def test_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    assert_invalid_token(await me(client, account.refresh_token))


async def test_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    assert_invalid_token(await client.post(REFRESH, json={"refresh_token": account.access_token}))
    # The session itself is untouched by the attempt.
    assert (await me(client, account.access_token)).status_code == 200


async def test_access_token_of_logged_out_session_is_rejected(client: httpx.AsyncClient) -> None:
    account = await new_account(client)

    logout = await client.post("/api/v1/auth/logout", headers=account.headers)

    assert logout.status_code == 204
    assert_invalid_token(await me(client, account.access_token))


async def test_token_verifier_for_websockets(app: FastAPI, client: httpx.AsyncClient) -> None:
    account = await new_account(client)
    verify = token_verifier(app)

    principal = await verify(account.access_token)

    assert principal is not None
    assert str(principal.user_id) == claims_of(account.access_token)["sub"]
    assert principal.role == "customer"
    assert await verify(account.refresh_token) is None
    assert await verify("garbage") is None
    await client.post("/api/v1/auth/logout", headers=account.headers)
    assert await verify(account.access_token) is None


# --- asymmetric algorithms -----------------------------------------------------------------


def _rsa_pem() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _ed25519_pem() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


RSA_PRIVATE, RSA_PUBLIC = _rsa_pem()


class TestRS256:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {
            "jwt_algorithm": "RS256",
            "jwt_private_key": RSA_PRIVATE,
            "jwt_public_key": RSA_PUBLIC,
        }

    async def test_rs256_tokens_work(self, client: httpx.AsyncClient) -> None:
        account = await new_account(client)

        assert jwt.get_unverified_header(account.access_token)["alg"] == "RS256"
        assert (await me(client, account.access_token)).status_code == 200

    async def test_hs256_signed_with_the_public_key_is_rejected(
        self, client: httpx.AsyncClient
    ) -> None:
        """Algorithm confusion: the public key (known to everyone) used as an HMAC secret."""
        account = await new_account(client)
        claims = claims_of(account.access_token) | {"role": "admin"}
        signing_input = (
            f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
            f"{b64(json.dumps(claims).encode())}"
        )
        signature = hmac.new(RSA_PUBLIC.encode(), signing_input.encode(), hashlib.sha256).digest()

        assert_invalid_token(await me(client, f"{signing_input}.{b64(signature)}"))

    async def test_alg_none_is_rejected(self, client: httpx.AsyncClient) -> None:
        account = await new_account(client)

        assert_invalid_token(await me(client, unsigned_token(claims_of(account.access_token))))


class TestEdDSA:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # Only the private key: the public key is derived from it; PEM with literal "\n"
        # as an environment variable would carry it.
        return {"jwt_algorithm": "EdDSA", "jwt_private_key": _ed25519_pem().replace("\n", "\\n")}

    async def test_eddsa_tokens_work(self, client: httpx.AsyncClient) -> None:

        account = await new_account(client)

        assert jwt.get_unverified_header(account.access_token)["alg"] == "EdDSA"
        assert (await me(client, account.access_token)).status_code == 200
        login = await client.post(LOGIN, data={"username": account.email, "password": "nope"})
        assert login.status_code == 401


async def test_verifier_is_installed_for_websockets_and_jobs(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await new_account(client)
    verify = get_token_verifier(app)

    assert verify is not None
    principal = await verify(account.access_token)
    assert principal is not None
    assert principal.is_staff is False
    assert await verify(account.refresh_token) is None


def test_signing_key_from_the_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jwt_private_key").write_text(_ed25519_pem())
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path))
    settings = Settings(_env_file=None, jwt_algorithm="EdDSA")  # type: ignore[call-arg]
    codec = AccessTokenCodec(settings)

    issued = codec.issue(user_id=uuid.uuid4(), session_id=uuid.uuid4(), role=Role.STAFF)
    claims = codec.decode(issued.token)
    assert claims is not None
    assert claims.role is Role.STAFF


def test_asymmetric_algorithm_without_a_key_refuses_to_start() -> None:
    with pytest.raises(TokenConfigurationError, match="JWT_PRIVATE_KEY"):
        AccessTokenCodec(make_settings(jwt_algorithm="RS256"))
    with pytest.raises(TokenConfigurationError, match="RSA"):
        AccessTokenCodec(make_settings(jwt_algorithm="RS256", jwt_private_key=_ed25519_pem()))
