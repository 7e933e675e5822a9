"""Every identity query. Writes that must be race-free are single conditional UPDATEs
whose row count decides the outcome, on PostgreSQL and SQLite alike."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, CursorResult, and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.models import AuthSession, OneTimeToken, RefreshToken, Role, User


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class IdentityRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- users ----------------------------------------------------------------------

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_user_by_email(self, email: str) -> User | None:
        if "\x00" in email:
            # No stored address contains NUL, and PostgreSQL refuses it in a query (a 500).
            return None
        result = await self.session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def add(self, instance: Any) -> None:
        self.session.add(instance)
        await self.session.flush()

    async def list_users(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
        role: Role | None,
    ) -> Sequence[User]:
        query = select(User).order_by(User.created_at, User.id).limit(limit)
        if role is not None:
            query = query.where(User.role == role.value)
        if after is not None:
            created_at, user_id = after
            query = query.where(
                or_(
                    User.created_at > created_at,
                    and_(User.created_at == created_at, User.id > user_id),
                )
            )
        result = await self.session.execute(query)
        return result.scalars().all()

    # --- sessions and refresh tokens ------------------------------------------------

    async def session_principal(
        self, session_id: uuid.UUID, now: datetime
    ) -> tuple[uuid.UUID, str] | None:
        """(user id, current role) while the session is live and its user active."""
        result = await self.session.execute(
            select(User.id, User.role)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(
                AuthSession.id == session_id,
                AuthSession.revoked_at.is_(None),
                AuthSession.expires_at > now,
                User.is_active.is_(True),
            )
        )
        row = result.one_or_none()
        return (row[0], row[1]) if row is not None else None

    async def get_refresh_token(
        self, token_hash: str
    ) -> tuple[RefreshToken, AuthSession, User] | None:
        result = await self.session.execute(
            select(RefreshToken, AuthSession, User)
            .join(AuthSession, AuthSession.id == RefreshToken.session_id)
            .join(User, User.id == AuthSession.user_id)
            .where(RefreshToken.token_hash == token_hash)
        )
        row = result.one_or_none()
        return (row[0], row[1], row[2]) if row is not None else None

    async def mark_refresh_token_used(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Claim a refresh token for rotation; False if another request already did."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(RefreshToken)
            .where(RefreshToken.id == token_id, RefreshToken.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def live_session_ids(self, user_id: uuid.UUID) -> list[uuid.UUID]:
        result = await self.session.execute(
            select(AuthSession.id).where(
                AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
            )
        )
        return list(result.scalars())

    async def revoke_sessions(
        self,
        *,
        user_id: uuid.UUID | None = None,
        session_id: uuid.UUID | None = None,
        except_session_id: uuid.UUID | None = None,
        reason: str,
        now: datetime,
    ) -> list[uuid.UUID]:
        """Revoke live sessions of a user (or one session); returns the revoked ids."""
        conditions: list[ColumnElement[bool]] = [AuthSession.revoked_at.is_(None)]
        if user_id is not None:
            conditions.append(AuthSession.user_id == user_id)
        if session_id is not None:
            conditions.append(AuthSession.id == session_id)
        if except_session_id is not None:
            conditions.append(AuthSession.id != except_session_id)
        ids = list(
            (await self.session.execute(select(AuthSession.id).where(*conditions))).scalars()
        )
        if ids:
            await self.session.execute(
                update(AuthSession)
                .where(AuthSession.id.in_(ids), AuthSession.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
                .execution_options(synchronize_session=False)
            )
        return ids

    # --- single-use tokens ----------------------------------------------------------

    async def get_one_time_token(self, token_id: uuid.UUID, purpose: str) -> OneTimeToken | None:
        result = await self.session.execute(
            select(OneTimeToken).where(OneTimeToken.id == token_id, OneTimeToken.purpose == purpose)
        )
        return result.scalar_one_or_none()

    async def consume_one_time_token(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Mark the token used if it still is unused and unexpired; False otherwise."""
        result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
            update(OneTimeToken)
            .where(
                OneTimeToken.id == token_id,
                OneTimeToken.used_at.is_(None),
                OneTimeToken.expires_at > now,
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    async def invalidate_one_time_tokens(
        self, user_id: uuid.UUID, purpose: str, now: datetime
    ) -> None:
        """Older unused tokens of a purpose die when a new one is issued or one is used."""
        await self.session.execute(
            update(OneTimeToken)
            .where(
                OneTimeToken.user_id == user_id,
                OneTimeToken.purpose == purpose,
                OneTimeToken.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )

    # --- housekeeping ---------------------------------------------------------------

    async def purge(self, *, now: datetime, revoked_before: datetime) -> dict[str, int]:
        """Delete what can no longer authenticate anyone. Rotated refresh tokens stay until
        they expire, because reuse detection needs them."""
        counts: dict[str, int] = {}
        for name, statement in (
            ("refresh_tokens", delete(RefreshToken).where(RefreshToken.expires_at < now)),
            ("one_time_tokens", delete(OneTimeToken).where(OneTimeToken.expires_at < now)),
            (
                "auth_sessions",
                delete(AuthSession).where(
                    or_(
                        AuthSession.expires_at < now,
                        AuthSession.revoked_at < revoked_before,
                    )
                ),
            ),
        ):
            result: CursorResult[Any] = await self.session.execute(  # type: ignore[assignment]
                statement.execution_options(synchronize_session=False)
            )
            counts[name] = result.rowcount
        return counts
