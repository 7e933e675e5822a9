"""Account rules: registration, verification, profile, password change and reset, and the
admin operations. Services flush, never commit, and raise only AppError subclasses."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from slipway.identity.errors import (
    IncorrectPasswordError,
    InvalidOneTimeTokenError,
    LoginSlowedDownError,
    SelfManagementError,
)
from slipway.identity.models import OneTimeToken, OneTimeTokenPurpose, Role, User
from slipway.identity.repository import IdentityRepository, as_utc
from slipway.identity.runtime import IdentityRuntime, Principal
from slipway.identity.schemas import UserUpdate
from slipway.identity.security import (
    PasswordHasher,
    check_password_policy,
    new_opaque_token,
    normalise_email,
)
from slipway.identity.tasks import IdentityMail, MailTemplate
from slipway.platform.errors import ConflictError, NotFoundError, ValidationFailedError
from slipway.platform.pagination import InvalidCursorError, cursor_codec

log = structlog.get_logger("slipway.identity")

_CURSOR_CONTEXT = "users:created_at"


class AccountService:
    def __init__(self, session: AsyncSession, runtime: IdentityRuntime) -> None:
        self.session = session
        self.runtime = runtime
        self.settings = runtime.settings
        self.repo = IdentityRepository(session)

    # --- registration and verification ------------------------------------------------

    async def register(self, email: str, password: str) -> None:
        """Create an unverified customer and mail a verification link.

        A taken address gets the same answer and the same work (two Argon2 hashes), and
        its owner gets a notice instead, so the endpoint reveals nothing."""
        email = normalise_email(email)
        check_password_policy(password, email)
        password_hash = await self.runtime.hasher.hash(password)
        existing = await self.repo.get_user_by_email(email)
        if existing is None:
            user = User(email=email, password_hash=password_hash, role=Role.CUSTOMER.value)
            try:
                async with self.session.begin_nested():
                    await self.repo.add(user)
            except IntegrityError:
                # Lost a race with a concurrent registration of the same address.
                existing = await self.repo.get_user_by_email(email)
            else:
                token = await self._issue_one_time_token(
                    user,
                    OneTimeTokenPurpose.VERIFY_EMAIL,
                    timedelta(hours=self.settings.email_verify_expire_hours),
                )
                await self._mail(
                    "verify_email",
                    email,
                    {
                        "url": self._link("verify-email", token),
                        "expires_hours": self.settings.email_verify_expire_hours,
                    },
                )
                log.info("user_registered", user_id=str(user.id))
                return
        await self.runtime.hasher.hash(new_opaque_token())  # the token hash of the other path
        if existing is not None and existing.is_active:
            await self._mail(
                "account_exists",
                email,
                {
                    "name": existing.full_name,
                    "url": f"{self.settings.public_base_url}/reset-password",
                },
            )

    async def verify_email(self, token: str) -> None:
        """Mark the address verified; the token works once."""
        user = await self._consume_one_time_token(token, OneTimeTokenPurpose.VERIFY_EMAIL)
        user.email_verified = True
        await self.session.flush()

    # --- own account ------------------------------------------------------------------

    async def get_me(self, principal: Principal) -> User:
        user = await self.repo.get_user(principal.user_id)
        if user is None:  # deleted between the session check and now
            raise NotFoundError()
        return user

    async def update_me(self, principal: Principal, changes: UserUpdate) -> User:
        """Apply the allowlisted fields only (the schema forbids every other field)."""
        user = await self.get_me(principal)
        if "full_name" in changes.model_fields_set:
            user.full_name = changes.full_name.strip() if changes.full_name else None
        await self.session.flush()
        return user

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        """Check the current password, set the new one, revoke every other session."""
        user = await self.get_me(principal)
        wait = await self.runtime.throttle.retry_after(user.email)
        if wait:
            raise LoginSlowedDownError(wait)
        if not await self.runtime.hasher.verify(current, user.password_hash):
            await self.runtime.throttle.record_failure(user.email)
            raise IncorrectPasswordError()
        check_password_policy(new, user.email)
        await self._set_password(user, new)
        await self._revoke(
            user_id=user.id, except_session_id=principal.session_id, reason="password_changed"
        )
        log.info("password_changed", user_id=str(user.id))

    async def deactivate_me(self, principal: Principal) -> None:
        """Deactivate the caller's account and revoke all its sessions."""
        user = await self.get_me(principal)
        await self._deactivate(user, reason="account_deleted")

    # --- password reset ----------------------------------------------------------------

    async def request_password_reset(self, email: str) -> None:
        """Mail a reset link if the account exists; the same work either way."""
        email = normalise_email(email)
        user = await self.repo.get_user_by_email(email)
        secret = new_opaque_token()
        # Hashed on both paths: the Argon2 cost dominates, so timing does not tell.
        secret_hash = await self.runtime.hasher.hash(secret)
        if user is None or not user.is_active:
            return
        now = datetime.now(UTC)
        await self.repo.invalidate_one_time_tokens(
            user.id, OneTimeTokenPurpose.PASSWORD_RESET.value, now
        )
        record = OneTimeToken(
            user_id=user.id,
            purpose=OneTimeTokenPurpose.PASSWORD_RESET.value,
            secret_hash=secret_hash,
            expires_at=now + timedelta(minutes=self.settings.password_reset_expire_minutes),
        )
        await self.repo.add(record)
        await self._mail(
            "password_reset",
            email,
            {
                "name": user.full_name,
                "url": self._link("reset-password", f"{record.id.hex}.{secret}"),
                "expires_minutes": self.settings.password_reset_expire_minutes,
            },
        )

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        """Set a new password from a reset token (once) and revoke every session."""
        user = await self._consume_one_time_token(
            token, OneTimeTokenPurpose.PASSWORD_RESET, policy_password=new_password
        )
        await self._set_password(user, new_password)
        # Following the mailed link proves the mailbox is theirs.
        user.email_verified = True
        await self._revoke(user_id=user.id, reason="password_reset")
        await self.runtime.throttle.reset(user.email)
        log.info("password_reset", user_id=str(user.id))

    # --- administration ----------------------------------------------------------------

    async def list_users(
        self, *, limit: int, cursor: str | None, role: Role | None
    ) -> tuple[Sequence[User], str | None]:
        """A page of users, oldest first, and the cursor of the next page."""
        codec = cursor_codec(self.settings.secret_key.get_secret_value())
        context = f"{_CURSOR_CONTEXT}:{role.value if role else '*'}"
        after: tuple[datetime, uuid.UUID] | None = None
        if cursor:
            created_at, user_id = codec.decode(context, cursor)
            try:
                after = (datetime.fromisoformat(str(created_at)), uuid.UUID(str(user_id)))
            except ValueError as exc:
                raise InvalidCursorError() from exc
        users = await self.repo.list_users(limit=limit + 1, after=after, role=role)
        next_cursor = None
        if len(users) > limit:
            users = users[:limit]
            last = users[-1]
            next_cursor = codec.encode(context, [as_utc(last.created_at).isoformat(), str(last.id)])
        return users, next_cursor

    async def get_user(self, principal: Principal, user_id: uuid.UUID) -> User:
        """Staff read anyone; others only themselves. Anything else is a 404, so ids of
        other accounts cannot be probed."""
        if not principal.is_staff and user_id != principal.user_id:
            raise NotFoundError()
        user = await self.repo.get_user(user_id)
        if user is None:
            raise NotFoundError()
        return user

    async def change_role(self, admin: Principal, user_id: uuid.UUID, role: Role) -> User:
        """Change a user's role; live sessions pick it up within the session-check TTL."""
        if user_id == admin.user_id:
            raise SelfManagementError()
        user = await self.get_user(admin, user_id)
        if user.role != role.value:
            user.role = role.value
            await self.session.flush()
            session_ids = await self.repo.live_session_ids(user.id)
            self.runtime.forget_sessions_after_commit(self.session, session_ids)
            log.info("user_role_changed", user_id=str(user.id), role=role.value)
        return user

    async def deactivate_user(self, admin: Principal, user_id: uuid.UUID) -> User:
        """Deactivate another account and revoke its sessions."""
        if user_id == admin.user_id:
            raise SelfManagementError()
        user = await self.get_user(admin, user_id)
        await self._deactivate(user, reason="deactivated_by_admin")
        return user

    # --- helpers -----------------------------------------------------------------------

    async def _set_password(self, user: User, password: str) -> None:
        user.password_hash = await self.runtime.hasher.hash(password)
        user.password_changed_at = datetime.now(UTC)
        await self.repo.invalidate_one_time_tokens(
            user.id, OneTimeTokenPurpose.PASSWORD_RESET.value, user.password_changed_at
        )
        await self.session.flush()

    async def _deactivate(self, user: User, *, reason: str) -> None:
        user.is_active = False
        await self.session.flush()
        await self._revoke(user_id=user.id, reason=reason)
        log.info("user_deactivated", user_id=str(user.id), reason=reason)

    async def _revoke(
        self, *, user_id: uuid.UUID, reason: str, except_session_id: uuid.UUID | None = None
    ) -> None:
        revoked = await self.repo.revoke_sessions(
            user_id=user_id,
            except_session_id=except_session_id,
            reason=reason,
            now=datetime.now(UTC),
        )
        self.runtime.forget_sessions_after_commit(self.session, revoked)

    async def _issue_one_time_token(
        self, user: User, purpose: OneTimeTokenPurpose, lifetime: timedelta
    ) -> str:
        now = datetime.now(UTC)
        await self.repo.invalidate_one_time_tokens(user.id, purpose.value, now)
        secret = new_opaque_token()
        record = OneTimeToken(
            user_id=user.id,
            purpose=purpose.value,
            secret_hash=await self.runtime.hasher.hash(secret),
            expires_at=now + lifetime,
        )
        await self.repo.add(record)
        return f"{record.id.hex}.{secret}"

    async def _consume_one_time_token(
        self, token: str, purpose: OneTimeTokenPurpose, *, policy_password: str | None = None
    ) -> User:
        """The token's user, with the token spent; any flaw is the same 400."""
        token_id_hex, _, secret = token.partition(".")
        try:
            token_id = uuid.UUID(hex=token_id_hex)
        except ValueError as exc:
            raise InvalidOneTimeTokenError() from exc
        record = await self.repo.get_one_time_token(token_id, purpose.value)
        if record is None or not secret:
            raise InvalidOneTimeTokenError()
        if not await self.runtime.hasher.verify(secret, record.secret_hash):
            raise InvalidOneTimeTokenError()
        user = await self.repo.get_user(record.user_id)
        if user is None or not user.is_active:
            raise InvalidOneTimeTokenError()
        if policy_password is not None:
            # Checked before spending the token, so a rejected password keeps it usable.
            check_password_policy(policy_password, user.email)
        if not await self.repo.consume_one_time_token(record.id, datetime.now(UTC)):
            raise InvalidOneTimeTokenError()
        return user

    def _link(self, page: str, token: str) -> str:
        # In the fragment: browsers never send it, so no access log or proxy records it.
        return f"{self.settings.public_base_url.rstrip('/')}/{page}#token={token}"

    async def _mail(self, template: MailTemplate, to: str, context: dict[str, Any]) -> None:
        await self.runtime.mail_queue(
            self.session, IdentityMail(template=template, to=to, context=context)
        )


async def create_admin(
    session: AsyncSession, hasher: PasswordHasher, email: str, password: str, *, promote: bool
) -> tuple[User, bool]:
    """Create an admin account (verified, active), or with `promote` make an existing
    account admin. Returns (user, created)."""
    try:
        email = validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationFailedError(
            "The e-mail address is invalid.", details=[{"field": "email", "message": str(exc)}]
        ) from exc
    email = normalise_email(email)
    repo = IdentityRepository(session)
    existing = await repo.get_user_by_email(email)
    if existing is not None:
        if not promote:
            raise ConflictError(
                "A user with this e-mail exists; pass --promote to make them an admin."
            )
        existing.role = Role.ADMIN.value
        existing.is_active = True
        await session.flush()
        return existing, False
    check_password_policy(password, email)
    user = User(
        email=email,
        password_hash=await hasher.hash(password),
        role=Role.ADMIN.value,
        email_verified=True,
    )
    await repo.add(user)
    return user, True
