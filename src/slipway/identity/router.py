"""HTTP for identity: `/api/v1/auth/*` (accounts, tokens, reset) and `/api/v1/users/*`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from slipway.identity.deps import (
    AccountServiceDep,
    AdminUser,
    CurrentUser,
    RuntimeDep,
    SessionServiceDep,
)
from slipway.identity.errors import InvalidTokenError
from slipway.identity.models import Role
from slipway.identity.runtime import identity_lifespan
from slipway.identity.schemas import (
    AcceptedRead,
    PasswordChange,
    PasswordResetConfirm,
    PasswordResetRequest,
    RefreshRequest,
    RegisterRequest,
    RoleUpdate,
    TokenPair,
    UserRead,
    UserUpdate,
    VerifyEmailRequest,
)
from slipway.identity.sessions import IssuedTokens
from slipway.platform.errors import error_response
from slipway.platform.pagination import CURSOR_MAX_LENGTH, Page
from slipway.platform.ratelimit import RateLimit, body_field, client_ip
from slipway.platform.settings import Settings

AUTH_PREFIX = "/auth"
#: The refresh cookie is only ever sent to the auth endpoints.
REFRESH_COOKIE_PATH = "/api/v1" + AUTH_PREFIX

REGISTER_ACCEPTED = AcceptedRead(
    message="If the address can be registered, a verification e-mail is on its way."
)
RESET_ACCEPTED = AcceptedRead(
    message="If an account uses this address, a password reset e-mail is on its way."
)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# Strict named policies (RATE_LIMIT_POLICIES); each key has its own budget, so "login" at
# 5/minute means 5 per client IP and 5 per e-mail address, across every instance.
LOGIN_LIMIT = Depends(RateLimit("login", keys=[client_ip, body_field("username", "username")]))
REGISTER_LIMIT = Depends(RateLimit("register", keys=[client_ip, body_field("email", "email")]))
RESET_LIMIT = Depends(RateLimit("password_reset", keys=[client_ip, body_field("email", "email")]))
RESET_CONFIRM_LIMIT = Depends(RateLimit("password_reset", keys=[client_ip]))

router = APIRouter(lifespan=identity_lifespan)
auth_router = APIRouter(prefix=AUTH_PREFIX, tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])


def _set_refresh_cookie(response: Response, settings: Settings, issued: IssuedTokens) -> None:
    response.set_cookie(
        settings.refresh_cookie_name,
        issued.refresh_token,
        max_age=issued.refresh_expires_in,
        path=REFRESH_COOKIE_PATH,
        secure=settings.refresh_cookie_secure,
        httponly=True,
        samesite="strict",
    )


def _clear_refresh_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        settings.refresh_cookie_name,
        path=REFRESH_COOKIE_PATH,
        secure=settings.refresh_cookie_secure,
        httponly=True,
        samesite="strict",
    )


def _token_response(response: Response, settings: Settings, issued: IssuedTokens) -> TokenPair:
    _set_refresh_cookie(response, settings, issued)
    response.headers.update(NO_STORE)
    return TokenPair(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
    )


# --- accounts ---------------------------------------------------------------------------


@auth_router.post(
    "/register",
    response_model=AcceptedRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Register an account",
    dependencies=[REGISTER_LIMIT],
)
async def register(body: RegisterRequest, accounts: AccountServiceDep) -> AcceptedRead:
    """Create an account and mail a verification link. Same answer for taken addresses."""
    await accounts.register(str(body.email), body.password)
    return REGISTER_ACCEPTED


@auth_router.post(
    "/verify-email", status_code=status.HTTP_204_NO_CONTENT, summary="Verify an e-mail address"
)
async def verify_email(body: VerifyEmailRequest, accounts: AccountServiceDep) -> None:
    """Confirm the address with the mailed single-use token."""
    await accounts.verify_email(body.token)


@auth_router.post(
    "/password-reset/request",
    response_model=AcceptedRead,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Request a password reset",
    dependencies=[RESET_LIMIT],
)
async def request_password_reset(
    body: PasswordResetRequest, accounts: AccountServiceDep
) -> AcceptedRead:
    """Mail a reset link if the account exists; the answer is always the same."""
    await accounts.request_password_reset(body.email)
    return RESET_ACCEPTED


@auth_router.post(
    "/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with a reset token",
    dependencies=[RESET_CONFIRM_LIMIT],
)
async def confirm_password_reset(body: PasswordResetConfirm, accounts: AccountServiceDep) -> None:
    """Set the new password (the token works once) and sign out every session."""
    await accounts.confirm_password_reset(body.token, body.new_password)


# --- tokens -----------------------------------------------------------------------------


@auth_router.post(
    "/login",
    response_model=TokenPair,
    summary="Log in (OAuth2 password flow)",
    dependencies=[LOGIN_LIMIT],
)
async def login(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    sessions: SessionServiceDep,
    runtime: RuntimeDep,
) -> TokenPair:
    """Exchange e-mail (`username`) and password for an access and a refresh token."""
    issued = await sessions.login(form.username, form.password, request.headers.get("user-agent"))
    return _token_response(response, runtime.settings, issued)


@auth_router.post(
    "/refresh",
    response_model=TokenPair,
    summary="Rotate the refresh token",
    responses={401: {"description": "Unusable refresh token"}},
)
async def refresh(
    request: Request,
    response: Response,
    sessions: SessionServiceDep,
    runtime: RuntimeDep,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> TokenPair | Response:
    """Spend a refresh token (JSON body or cookie) for a new pair. Reusing a spent one
    revokes its whole session."""
    settings = runtime.settings
    presented = (body.refresh_token if body else None) or request.cookies.get(
        settings.refresh_cookie_name
    )
    issued = await sessions.refresh(presented)
    if issued is None:
        # Returned, not raised: a reuse detection revoked the family and that must commit.
        error = InvalidTokenError()
        failure = error_response(
            error.status_code, error.code, error.message, headers=error.headers
        )
        _clear_refresh_cookie(failure, settings)
        return failure
    return _token_response(response, settings, issued)


@auth_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Log out this session")
async def logout(
    principal: CurrentUser, response: Response, sessions: SessionServiceDep, runtime: RuntimeDep
) -> None:
    """Revoke the session of this access token, with its refresh tokens."""
    await sessions.logout(principal)
    _clear_refresh_cookie(response, runtime.settings)


@auth_router.post(
    "/logout-all", status_code=status.HTTP_204_NO_CONTENT, summary="Log out everywhere"
)
async def logout_all(
    principal: CurrentUser, response: Response, sessions: SessionServiceDep, runtime: RuntimeDep
) -> None:
    """Revoke every session of the caller."""
    await sessions.logout_all(principal)
    _clear_refresh_cookie(response, runtime.settings)


# --- own account ------------------------------------------------------------------------


@users_router.get("/me", response_model=UserRead, summary="Read my account")
async def read_me(principal: CurrentUser, accounts: AccountServiceDep) -> UserRead:
    """The caller's account."""
    return UserRead.model_validate(await accounts.get_me(principal))


@users_router.patch("/me", response_model=UserRead, summary="Update my account")
async def update_me(
    body: UserUpdate, principal: CurrentUser, accounts: AccountServiceDep
) -> UserRead:
    """Change the allowlisted fields (`full_name`); any other field is a 422."""
    return UserRead.model_validate(await accounts.update_me(principal, body))


@users_router.post(
    "/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change my password"
)
async def change_password(
    body: PasswordChange, principal: CurrentUser, accounts: AccountServiceDep
) -> None:
    """Needs the current password; every other session is signed out."""
    await accounts.change_password(principal, body.current_password, body.new_password)


@users_router.delete("/me", status_code=status.HTTP_204_NO_CONTENT, summary="Close my account")
async def delete_me(
    principal: CurrentUser, response: Response, accounts: AccountServiceDep, runtime: RuntimeDep
) -> None:
    """Deactivate the account and revoke all its sessions."""
    await accounts.deactivate_me(principal)
    _clear_refresh_cookie(response, runtime.settings)


# --- administration ---------------------------------------------------------------------


@users_router.get("", response_model=Page[UserRead], summary="List users (admin)")
async def list_users(
    _admin: AdminUser,
    accounts: AccountServiceDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_LENGTH)] = None,
    role: Role | None = None,
) -> Page[UserRead]:
    """Every account, oldest first, with keyset pagination."""
    users, next_cursor = await accounts.list_users(limit=limit, cursor=cursor, role=role)
    return Page[UserRead](
        items=[UserRead.model_validate(user) for user in users], next_cursor=next_cursor
    )


@users_router.get("/{user_id}", response_model=UserRead, summary="Read a user")
async def read_user(
    user_id: uuid.UUID, principal: CurrentUser, accounts: AccountServiceDep
) -> UserRead:
    """Staff read any account; everyone else only their own (others are 404)."""
    return UserRead.model_validate(await accounts.get_user(principal, user_id))


@users_router.patch("/{user_id}/role", response_model=UserRead, summary="Change a role (admin)")
async def change_role(
    user_id: uuid.UUID, body: RoleUpdate, admin: AdminUser, accounts: AccountServiceDep
) -> UserRead:
    """Set a user's role; their live sessions use it within seconds."""
    return UserRead.model_validate(await accounts.change_role(admin, user_id, body.role))


@users_router.post(
    "/{user_id}/deactivate", response_model=UserRead, summary="Deactivate a user (admin)"
)
async def deactivate_user(
    user_id: uuid.UUID, admin: AdminUser, accounts: AccountServiceDep
) -> UserRead:
    """Deactivate the account and revoke its sessions."""
    return UserRead.model_validate(await accounts.deactivate_user(admin, user_id))


router.include_router(auth_router)
router.include_router(users_router)
