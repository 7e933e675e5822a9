"""Authentication dependencies: `CurrentUser`, `StaffUser`, `AdminUser`, and the services.

Every failure is the same 401 (`WWW-Authenticate: Bearer`, "Invalid or expired token."),
so a client learns nothing about why a token was refused.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from slipway.identity.errors import InvalidTokenError
from slipway.identity.runtime import IdentityRuntime, Principal, get_identity_runtime
from slipway.identity.service import AccountService
from slipway.identity.sessions import SessionService
from slipway.platform.db.session import SessionDep
from slipway.platform.errors import PermissionDeniedError

LOGIN_PATH = "/api/v1/auth/login"

# Dependencies are `async def` even without awaits: FastAPI runs plain `def` ones in the
# thread pool, a hop that costs more than the work.

# auto_error=False: a missing header must produce our envelope, not FastAPI's own 401.
# The scheme still documents the password flow, so the docs' Authorize button works.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl=LOGIN_PATH, auto_error=False)


async def get_runtime(request: Request) -> IdentityRuntime:
    return get_identity_runtime(request)


RuntimeDep = Annotated[IdentityRuntime, Depends(get_runtime)]


async def get_principal(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    if not token:
        raise InvalidTokenError()
    principal = await runtime.verify_access_token(token, session)
    if principal is None:
        raise InvalidTokenError()
    # The rate limiter keys authenticated requests by user; it reads this slot.
    request.scope.setdefault("state", {})["user_id"] = str(principal.user_id)
    return principal


CurrentUser = Annotated[Principal, Depends(get_principal)]


async def require_staff(principal: CurrentUser) -> Principal:
    if not principal.is_staff:
        raise PermissionDeniedError()
    return principal


async def require_admin(principal: CurrentUser) -> Principal:
    if not principal.is_admin:
        raise PermissionDeniedError()
    return principal


async def get_optional_principal(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal | None:
    """The caller on public routes that show more to staff; a bad token is still a 401."""
    if not token:
        return None
    return await get_principal(request, session, runtime, token)


OptionalUser = Annotated[Principal | None, Depends(get_optional_principal)]
StaffUser = Annotated[Principal, Depends(require_staff)]
AdminUser = Annotated[Principal, Depends(require_admin)]


async def get_account_service(session: SessionDep, runtime: RuntimeDep) -> AccountService:
    return AccountService(session, runtime)


async def get_session_service(session: SessionDep, runtime: RuntimeDep) -> SessionService:
    return SessionService(session, runtime)


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]
SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]
