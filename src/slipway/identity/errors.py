"""Identity errors. Authentication failures never say which check failed."""

from __future__ import annotations

from slipway.platform.errors import (
    AppError,
    AuthenticationError,
    ConflictError,
    RateLimitedError,
    ValidationFailedError,
)


class InvalidTokenError(AuthenticationError):
    """Any bad access or refresh token: malformed, forged, expired, revoked, wrong type."""

    code = "invalid_token"
    message = "Invalid or expired token."


class InvalidCredentialsError(AuthenticationError):
    """Unknown e-mail, wrong password or deactivated account: one answer for all three."""

    code = "invalid_credentials"
    message = "Incorrect e-mail or password."


class LoginSlowedDownError(RateLimitedError):
    """Too many recent failures on this account; the wait is in Retry-After."""

    code = "login_slowed_down"
    message = "Too many failed attempts for this account; retry later."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(headers={"Retry-After": str(max(1, retry_after_seconds))})


class InvalidOneTimeTokenError(AppError):
    """A verification or reset token that is unknown, used, expired or for another purpose."""

    status_code = 400
    code = "invalid_token"
    message = "Invalid or expired token."


class PasswordPolicyError(ValidationFailedError):
    code = "weak_password"
    message = "The password does not meet the password policy."


class IncorrectPasswordError(ValidationFailedError):
    """The current password given to change it is wrong. 422, not 401: the caller is
    authenticated and a 401 would make clients throw their tokens away."""

    code = "incorrect_password"
    message = "The current password is incorrect."


class SelfManagementError(ConflictError):
    """An admin may not demote or deactivate themselves (that could leave no admin)."""

    code = "self_management_forbidden"
    message = "Administrators cannot change their own role or deactivate themselves here."
