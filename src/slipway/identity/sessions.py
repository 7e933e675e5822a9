"""Login sessions: password login, refresh-token rotation with reuse detection, logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.errors import InvalidCredentialsError, LoginSlowedDownError
from slipway.identity.models import AuthSession, RefreshToken, Role, User
from slipway.identity.repository import IdentityRepository, as_utc
from slipway.identity.runtime import IdentityRuntime, Principal
from slipway.identity.security import (
    REFRESH_TOKEN_PREFIX,
    digest_token,
    new_opaque_token,
    normalise_email,
)

log = structlog.get_logger("slipway.identity")

#: Longest password a login will hash; longer input is refused without the work.
LOGIN_PASSWORD_MAX_LENGTH = 1024
USER_AGENT_MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: uuid.UUID


class SessionService:
    def __init__(self, session: AsyncSession, runtime: IdentityRuntime) -> None:
        self.session = session
        self.runtime = runtime
        self.settings = runtime.settings
        self.repo = IdentityRepository(session)
        self._refresh_lifetime = timedelta(days=self.settings.refresh_token_expire_days)

    async def login(self, username: str, password: str, user_agent: str | None) -> IssuedTokens:
        """Check e-mail and password and open a session.

        Unknown e-mails verify against a dummy hash and deactivated accounts are checked
        like any other, so neither response nor timing tells them apart."""
        email = normalise_email(username)
        wait = await self.runtime.throttle.retry_after(email)
        if wait:
            raise LoginSlowedDownError(wait)
        user = await self.repo.get_user_by_email(email)
        if user is None or len(password) > LOGIN_PASSWORD_MAX_LENGTH:
            await self.runtime.hasher.verify_dummy(password[:LOGIN_PASSWORD_MAX_LENGTH])
            await self.runtime.throttle.record_failure(email)
            raise InvalidCredentialsError()
        matches, upgraded_hash = await self.runtime.hasher.verify_and_update(
            password, user.password_hash
        )
        if not matches or not user.is_active:
            await self.runtime.throttle.record_failure(email)
            raise InvalidCredentialsError()
        if upgraded_hash is not None:
            # The configured Argon2 cost changed since this hash was made.
            user.password_hash = upgraded_hash
        await self.runtime.throttle.reset(email)
        issued = await self._open_session(user, user_agent)
        log.info("login", user_id=str(user.id), session_id=str(issued.session_id))
        return issued

    async def refresh(self, refresh_token: str | None) -> IssuedTokens | None:
        """Rotate a refresh token: the presented one is spent, a new pair is issued.

        Returns None for any unusable token. Presenting a token that was already rotated
        means two parties hold the family: the whole session is revoked. That revocation
        is flushed here and must be committed even though the caller answers 401."""
        if not refresh_token or not refresh_token.startswith(REFRESH_TOKEN_PREFIX):
            return None
        found = await self.repo.get_refresh_token(digest_token(refresh_token))
        if found is None:
            return None
        token, auth_session, user = found
        now = datetime.now(UTC)
        if (
            auth_session.revoked_at is not None
            or as_utc(auth_session.expires_at) <= now
            or as_utc(token.expires_at) <= now
            or not user.is_active
        ):
            return None
        if token.used_at is not None or not await self.repo.mark_refresh_token_used(token.id, now):
            revoked = await self.repo.revoke_sessions(
                session_id=auth_session.id, reason="refresh_token_reuse", now=now
            )
            self.runtime.forget_sessions_after_commit(self.session, revoked)
            log.warning(
                "refresh_token_reuse",
                user_id=str(user.id),
                session_id=str(auth_session.id),
            )
            return None
        auth_session.last_used_at = now
        auth_session.expires_at = now + self._refresh_lifetime
        return await self._issue(user, auth_session, now)

    async def logout(self, principal: Principal) -> None:
        """Revoke the caller's session (its refresh family and access tokens)."""
        revoked = await self.repo.revoke_sessions(
            session_id=principal.session_id, reason="logout", now=datetime.now(UTC)
        )
        self.runtime.forget_sessions_after_commit(self.session, revoked)

    async def logout_all(self, principal: Principal) -> int:
        """Revoke every session of the caller; returns how many were live."""
        revoked = await self.repo.revoke_sessions(
            user_id=principal.user_id, reason="logout_all", now=datetime.now(UTC)
        )
        self.runtime.forget_sessions_after_commit(self.session, revoked)
        return len(revoked)

    async def _open_session(self, user: User, user_agent: str | None) -> IssuedTokens:
        now = datetime.now(UTC)
        auth_session = AuthSession(
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=now + self._refresh_lifetime,
            user_agent=user_agent[:USER_AGENT_MAX_LENGTH] if user_agent else None,
        )
        await self.repo.add(auth_session)
        return await self._issue(user, auth_session, now)

    async def _issue(self, user: User, auth_session: AuthSession, now: datetime) -> IssuedTokens:
        raw_refresh = new_opaque_token(REFRESH_TOKEN_PREFIX)
        await self.repo.add(
            RefreshToken(
                session_id=auth_session.id,
                token_hash=digest_token(raw_refresh),
                created_at=now,
                expires_at=now + self._refresh_lifetime,
            )
        )
        access = self.runtime.tokens.issue(
            user_id=user.id, session_id=auth_session.id, role=Role(user.role), now=now
        )
        return IssuedTokens(
            access_token=access.token,
            expires_in=access.expires_in,
            refresh_token=raw_refresh,
            refresh_expires_in=int(self._refresh_lifetime.total_seconds()),
            session_id=auth_session.id,
        )
