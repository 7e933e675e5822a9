"""Access tokens: short-lived JWTs with a pinned algorithm and every claim checked.

The algorithm comes from settings, never from the token header: the verifier passes
exactly one algorithm to PyJWT, so `alg: none` and HS256-signed-with-the-public-key
(algorithm confusion) are refused before any key is used.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

from slipway.identity.models import Role
from slipway.platform.settings import Settings

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - the typ claim value
REQUIRED_CLAIMS = ("sub", "exp", "iat", "nbf", "jti", "iss", "aud", "typ", "role", "sid")
#: Tolerated clock difference between the issuing and the verifying instance.
CLOCK_SKEW_SECONDS = 5
#: Longer is not a JWT anyone here issued; refuse before parsing.
MAX_TOKEN_LENGTH = 4096
RSA_MIN_BITS = 2048


class TokenConfigurationError(ValueError):
    """The configured algorithm has no usable key."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    role: Role
    token_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_in: int


def _pem(value: str) -> bytes:
    # Environment variables often carry PEM with literal "\n" sequences.
    return value.replace("\\n", "\n").strip().encode("ascii")


@dataclass(frozen=True, slots=True)
class KeyMaterial:
    algorithm: str
    signing_key: Any
    verifying_key: Any


def load_key_material(settings: Settings) -> KeyMaterial:
    """Keys for the configured algorithm, from settings (or the secrets directory, which
    the settings sources read as files named `jwt_private_key` / `jwt_public_key`)."""
    algorithm = settings.jwt_algorithm
    if algorithm == "HS256":
        # A key derived for this purpose only, so the JWT key never doubles as another
        # HMAC key (cursor signatures use the same SECRET_KEY).
        secret = hashlib.sha256(
            b"slipway-jwt-hs256:" + settings.secret_key.get_secret_value().encode("utf-8")
        ).digest()
        return KeyMaterial(algorithm, secret, secret)
    if settings.jwt_private_key is None:
        raise TokenConfigurationError(
            f"JWT_ALGORITHM={algorithm} needs JWT_PRIVATE_KEY (PEM), from the environment "
            "or a `jwt_private_key` file in SECRETS_DIR"
        )
    private_key = serialization.load_pem_private_key(
        _pem(settings.jwt_private_key.get_secret_value()), password=None
    )
    if settings.jwt_public_key:
        public_key: Any = serialization.load_pem_public_key(_pem(settings.jwt_public_key))
    else:
        public_key = private_key.public_key()
    if algorithm == "RS256":
        if not isinstance(private_key, RSAPrivateKey) or not isinstance(public_key, RSAPublicKey):
            raise TokenConfigurationError("JWT_ALGORITHM=RS256 needs an RSA key pair")
        if private_key.key_size < RSA_MIN_BITS:
            raise TokenConfigurationError(f"RS256 keys must have at least {RSA_MIN_BITS} bits")
    elif not isinstance(private_key, Ed25519PrivateKey) or not isinstance(
        public_key, Ed25519PublicKey
    ):
        raise TokenConfigurationError("JWT_ALGORITHM=EdDSA needs an Ed25519 key pair")
    return KeyMaterial(algorithm, private_key, public_key)


class AccessTokenCodec:
    def __init__(self, settings: Settings) -> None:
        self._keys = load_key_material(settings)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._lifetime = timedelta(minutes=settings.access_token_expire_minutes)

    @property
    def algorithm(self) -> str:
        return self._keys.algorithm

    def issue(
        self,
        *,
        user_id: uuid.UUID,
        session_id: uuid.UUID,
        role: Role,
        now: datetime | None = None,
    ) -> IssuedAccessToken:
        issued_at = (now or datetime.now(UTC)).replace(microsecond=0)
        expires_at = issued_at + self._lifetime
        claims = {
            "sub": str(user_id),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "jti": uuid.uuid4().hex,
            "iss": self._issuer,
            "aud": self._audience,
            "typ": ACCESS_TOKEN_TYPE,
            "role": role.value,
            "sid": str(session_id),
        }
        token = jwt.encode(claims, self._keys.signing_key, algorithm=self._keys.algorithm)
        return IssuedAccessToken(token=token, expires_in=int(self._lifetime.total_seconds()))

    def decode(self, token: str) -> AccessClaims | None:
        """The verified claims, or None for any token that is not a valid access token."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            payload = jwt.decode(
                token,
                self._keys.verifying_key,
                algorithms=[self._keys.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=CLOCK_SKEW_SECONDS,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                },
            )
        except jwt.PyJWTError:
            return None
        if payload.get("typ") != ACCESS_TOKEN_TYPE:
            return None
        try:
            return AccessClaims(
                user_id=uuid.UUID(str(payload["sub"])),
                session_id=uuid.UUID(str(payload["sid"])),
                role=Role(payload["role"]),
                token_id=str(payload["jti"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            )
        except (ValueError, TypeError):
            return None
