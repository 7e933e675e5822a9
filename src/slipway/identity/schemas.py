"""Request and response bodies. Inputs forbid unknown fields, so mass assignment
(`role`, `is_active`, `email_verified`, `id`, ...) is rejected, never silently applied."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from slipway.identity.models import Role
from slipway.identity.security import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
from slipway.platform.schema_types import NO_NUL_PATTERN


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


# Length bounds are checked again by the policy (which knows the e-mail); declaring them
# here documents them in the OpenAPI schema.
PasswordStr = Annotated[str, Field(min_length=PASSWORD_MIN_LENGTH, max_length=PASSWORD_MAX_LENGTH)]
#: Tokens are at most a few hundred characters; anything longer is refused unparsed.
TokenStr = Annotated[str, Field(min_length=1, max_length=512)]


def _case_insensitive(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


#: email-validator refuses special-use domains (.test, .invalid, .local, ...) as undeliverable.
#: The schema says so too, or clients (and schemathesis) would take such addresses for valid
#: `format: email` values and get an unexplained 422.
_NOT_SPECIAL_USE = (
    r"^[^@]+@(?!(?:[^@]*\.)?(?:"
    + "|".join(_case_insensitive(name) for name in SPECIAL_USE_DOMAIN_NAMES)
    + r")\.?$)[^@]+$"
)
AccountEmail = Annotated[
    EmailStr, Field(max_length=320, json_schema_extra={"pattern": _NOT_SPECIAL_USE})
]


class RegisterRequest(_Input):
    email: AccountEmail
    password: PasswordStr


class AcceptedRead(BaseModel):
    """The same body whatever happened, so it reveals nothing about accounts."""

    status: Literal["accepted"] = "accepted"
    message: str


class VerifyEmailRequest(_Input):
    token: TokenStr


class PasswordResetRequest(_Input):
    email: str = Field(min_length=1, max_length=320)


class PasswordResetConfirm(_Input):
    token: TokenStr
    new_password: PasswordStr


class PasswordChange(_Input):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: PasswordStr


class RefreshRequest(_Input):
    """The refresh token in the body; without it, the HttpOnly cookie is used."""

    refresh_token: str | None = Field(default=None, min_length=1, max_length=512)


class TokenPair(BaseModel):
    """OAuth2 token response (RFC 6749 §5.1) plus the refresh token's lifetime."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - RFC 6749 token type
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    email_verified: bool
    created_at: datetime


class UserUpdate(_Input):
    """The only fields a user may change on their own account."""

    full_name: str | None = Field(default=None, max_length=200, pattern=NO_NUL_PATTERN)


class RoleUpdate(_Input):
    role: Role
