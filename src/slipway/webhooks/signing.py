"""Delivery signatures (the Standard Webhooks scheme) and secrets at rest.

Each delivery carries three headers:

    webhook-id:        the message id, the same on every retry (deduplicate on it)
    webhook-timestamp: Unix seconds when this attempt was signed
    webhook-signature: "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))

where `key` is the base64-decoded part of the endpoint secret after its `whsec_` prefix.
Signing the timestamp with the body lets a receiver refuse replays of an old, validly
signed request (reject timestamps more than five minutes away). The scheme is the
standardwebhooks.com one, so receivers can verify with its libraries; docs/webhooks.md
gives the recipe in plain Python.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format marker, not a secret
SECRET_BYTES = 32
SIGNATURE_VERSION = "v1"
#: How far a receiver should let a timestamp drift from its clock (Standard Webhooks).
TOLERANCE_SECONDS = 5 * 60
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class InvalidSignatureError(ValueError):
    """The signature, or its timestamp, does not verify."""


class SecretUnreadableError(RuntimeError):
    """A stored secret cannot be decrypted with the current SECRET_KEY."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_headers(
    secret: str, message_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers of one attempt, signed now (or at `timestamp`)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        HEADER_ID: message_id,
        HEADER_TIMESTAMP: str(stamp),
        HEADER_SIGNATURE: sign(secret, message_id, stamp, body),
    }


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """A receiver's check, in Python: raise InvalidSignatureError unless `body` verifies.

    `headers` keys are lower case. The signature header may list several space-separated
    signatures (during a secret rotation); one match is enough.
    """
    try:
        message_id = headers[HEADER_ID]
        timestamp = int(headers[HEADER_TIMESTAMP])
        offered = headers[HEADER_SIGNATURE].split()
    except (KeyError, ValueError) as error:
        raise InvalidSignatureError("missing or malformed webhook headers") from error
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise InvalidSignatureError("timestamp outside the tolerance (a replay?)")
    try:
        expected = sign(secret, message_id, timestamp, body)
    except binascii.Error as error:
        raise InvalidSignatureError("the secret is not whsec_<base64>") from error
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise InvalidSignatureError("no signature matches")


class SecretBox:
    """Encrypts endpoint secrets at rest with a key derived from SECRET_KEY.

    Rotating SECRET_KEY makes stored secrets unreadable: rotate each endpoint's secret
    afterwards (POST /api/v1/webhooks/{id}/rotate-secret), as docs/webhooks.md says.
    """

    def __init__(self, secret_key: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"slipway webhook secrets"
        ).derive(secret_key.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode("ascii")

    def open(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken as error:
            raise SecretUnreadableError(
                "the endpoint secret cannot be decrypted (was SECRET_KEY rotated?)"
            ) from error
