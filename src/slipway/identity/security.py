"""Password hashing (Argon2id through pwdlib, off the event loop), e-mail normalisation,
the password policy and opaque random tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata

import anyio
import anyio.to_thread
from email_validator import EmailNotValidError, validate_email
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from slipway.identity.errors import PasswordPolicyError
from slipway.platform.settings import Settings

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128

#: OWASP Password Storage Cheat Sheet, Argon2id rows (memory KiB, iterations), p=1: each
#: row is an equally strong minimum. Configured costs must dominate at least one row.
OWASP_ARGON2ID_MINIMUMS: tuple[tuple[int, int], ...] = (
    (47_104, 1),
    (19_456, 2),
    (12_288, 3),
    (9_216, 4),
    (7_168, 5),
)

#: Marks refresh tokens, so secret scanners and humans recognise a leaked one.
REFRESH_TOKEN_PREFIX = "rt_"  # noqa: S105 - a prefix, not a secret


class InsecureHashParametersError(ValueError):
    """Argon2 costs below every OWASP row: refuse to run rather than store weak hashes."""


def check_argon2_parameters(memory_kib: int, time_cost: int) -> None:
    if not any(memory_kib >= m and time_cost >= t for m, t in OWASP_ARGON2ID_MINIMUMS):
        rows = ", ".join(f"m={m} KiB t={t}" for m, t in OWASP_ARGON2ID_MINIMUMS)
        raise InsecureHashParametersError(
            f"PASSWORD_HASH_MEMORY_KIB={memory_kib} with PASSWORD_HASH_TIME_COST={time_cost} "
            f"is below the OWASP minimums for Argon2id ({rows})"
        )


def normalise_email(raw: str) -> str:
    """Canonical form for storage and lookup: NFC, trimmed, IDNA domain, lower-cased.

    Lower-casing the local part is technically lossy, but no real mailbox relies on case
    and it is what stops `Alice@x` and `alice@x` from being two accounts.
    """
    candidate = unicodedata.normalize("NFC", raw.strip())
    try:
        validated = validate_email(candidate, check_deliverability=False)
        candidate = validated.normalized
    except EmailNotValidError:
        # Lookups (login, reset) still normalise junk consistently; registration
        # validates the address in its schema before it gets here.
        pass
    return candidate.lower()


def check_password_policy(password: str, email: str) -> None:
    """8-128 characters and not the e-mail address (compared case-insensitively)."""
    problems: list[dict[str, str]] = []
    if len(password) < PASSWORD_MIN_LENGTH:
        problems.append(
            {"field": "password", "message": f"must be at least {PASSWORD_MIN_LENGTH} characters"}
        )
    elif len(password) > PASSWORD_MAX_LENGTH:
        problems.append(
            {"field": "password", "message": f"must be at most {PASSWORD_MAX_LENGTH} characters"}
        )
    if password.strip().casefold() == email.casefold():
        problems.append({"field": "password", "message": "must not be the e-mail address"})
    if problems:
        raise PasswordPolicyError(details=problems)


class PasswordHasher:
    """Argon2id hashing and verification, always in a worker thread.

    Argon2 takes tens of milliseconds of CPU and megabytes of RAM on purpose; on the event
    loop it would stall every other request. A dedicated capacity limiter bounds how many
    run at once, so a login storm queues here instead of exhausting memory or the default
    thread pool other code relies on.
    """

    def __init__(self, settings: Settings) -> None:
        check_argon2_parameters(settings.password_hash_memory_kib, settings.password_hash_time_cost)
        self._password_hash = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.password_hash_time_cost,
                    memory_cost=settings.password_hash_memory_kib,
                    parallelism=settings.password_hash_parallelism,
                ),
            )
        )
        self._concurrency = settings.password_hash_concurrency
        self._limiter: anyio.CapacityLimiter | None = None
        self._dummy_hash: str | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        # Created on first use, inside the running event loop it belongs to.
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._concurrency)
        return self._limiter

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(
            self._password_hash.hash, password, limiter=self.limiter
        )

    async def verify_and_update(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one uses outdated parameters)."""
        try:
            return await anyio.to_thread.run_sync(
                self._password_hash.verify_and_update, password, password_hash, limiter=self.limiter
            )
        except UnknownHashError:
            return False, None

    async def verify(self, password: str, password_hash: str) -> bool:
        matches, _ = await self.verify_and_update(password, password_hash)
        return matches

    async def prepare(self) -> None:
        """Make the dummy hash at startup, so the first unknown-address login does not
        take twice as long as the others (which would tell it apart)."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))

    async def verify_dummy(self, password: str) -> None:
        """Spend the same work as a real verification, for accounts that do not exist."""
        await self.prepare()
        assert self._dummy_hash is not None
        await self.verify(password, self._dummy_hash)


def new_opaque_token(prefix: str = "") -> str:
    """256 bits from the OS CSPRNG, URL-safe."""
    return prefix + secrets.token_urlsafe(32)


def digest_token(token: str) -> str:
    """SHA-256 hex of a high-entropy token: enough for lookup (no salt or work factor is
    needed when the input cannot be guessed) and useless to whoever reads the table."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equals(left: str, right: str) -> bool:
    return hmac.compare_digest(left.encode("utf-8"), right.encode("utf-8"))
