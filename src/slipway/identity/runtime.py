"""The identity area's long-lived state, opened with the application and reached through
`request.app.state.identity`: hasher, token codec, caches and the session check."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from cashews import Cache
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp

from slipway.identity.models import Role
from slipway.identity.repository import IdentityRepository
from slipway.identity.security import PasswordHasher
from slipway.identity.tasks import MailQueue, mail_queue_for
from slipway.identity.throttle import LoginThrottle
from slipway.identity.tokens import AccessTokenCodec
from slipway.platform.db.session import after_commit
from slipway.platform.events.auth import install_token_verifier
from slipway.platform.settings import Settings

log = structlog.get_logger("slipway.identity")

#: Upper bound on cached session checks per process (LRU beyond that).
SESSION_CACHE_SIZE = 50_000
_REVOKED = "-"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the verified token's user and session, with the role as stored now
    (not as it was when the token was issued)."""

    user_id: uuid.UUID
    role: Role
    session_id: uuid.UUID

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.STAFF, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


TokenVerifier = Callable[[str], Awaitable["Principal | None"]]


class IdentityRuntime:
    def __init__(
        self,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        mail_queue: MailQueue,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.hasher = PasswordHasher(settings)
        self.tokens = AccessTokenCodec(settings)
        # Session checks are cached per process: the TTL bounds how long a revoked
        # session's access tokens keep working on other instances, and revocations made
        # here are dropped from this cache at once.
        self._session_cache = Cache(name="identity-sessions")
        self._session_cache.setup(f"mem://?size={SESSION_CACHE_SIZE}&check_interval=0")
        # Login failure counts must be shared by every instance: Redis when configured.
        # JSON, not pickle: unpickling what a shared Redis holds would run its code.
        self._shared_cache = Cache(name="identity-shared")
        if settings.redis_url:
            # Short timeouts, as every Redis client here: a dead Redis must fail a login
            # attempt's throttle lookup fast, not hang it (OWASP API10).
            self._shared_cache.setup(
                settings.redis_url,
                suppress=False,
                pickle_type="json",
                socket_connect_timeout=1.0,
                socket_timeout=1.0,
            )
        else:
            self._shared_cache.setup("mem://?size=100000&check_interval=60")
        self.throttle = LoginThrottle(self._shared_cache, settings)
        #: How account mails leave (the platform mail job; tests may capture them).
        self.mail_queue = mail_queue

    async def open(self) -> None:
        await self._session_cache.init()
        await self._shared_cache.init()
        await self.hasher.prepare()

    async def close(self) -> None:
        with warnings.catch_warnings():
            # cashews 7.x closes its Redis client with redis-py's deprecated `close()`.
            warnings.filterwarnings("ignore", r"Call to deprecated close", DeprecationWarning)
            await self._shared_cache.close()
        await self._session_cache.close()

    # --- access-token verification ---------------------------------------------------

    async def verify_access_token(
        self, token: str, session: AsyncSession | None = None
    ) -> Principal | None:
        """The principal for a valid access token of a live session, else None.

        This is the verifier other areas (WebSockets) use; it never raises for bad tokens.
        """
        claims = self.tokens.decode(token)
        if claims is None:
            return None
        state = await self._session_state(claims.session_id, session)
        if state is None or state[0] != claims.user_id:
            return None
        return Principal(user_id=state[0], role=state[1], session_id=claims.session_id)

    async def _session_state(
        self, session_id: uuid.UUID, session: AsyncSession | None
    ) -> tuple[uuid.UUID, Role] | None:
        ttl = self.settings.session_check_cache_seconds
        key = str(session_id)
        if ttl:
            cached = await self._session_cache.get(key)
            if cached is not None:
                return _decode_state(cached)
        if session is not None:
            state = await IdentityRepository(session).session_principal(
                session_id, datetime.now(UTC)
            )
        else:
            async with self.session_factory() as own_session:
                state = await IdentityRepository(own_session).session_principal(
                    session_id, datetime.now(UTC)
                )
        if ttl:
            encoded = f"{state[0]}|{state[1]}" if state else _REVOKED
            await self._session_cache.set(key, encoded, expire=ttl)
        return (state[0], Role(state[1])) if state else None

    async def forget_sessions(self, session_ids: list[uuid.UUID]) -> None:
        """Drop cached checks after a revocation commits (this process only)."""
        for session_id in session_ids:
            await self._session_cache.delete(str(session_id))

    def forget_sessions_after_commit(
        self, session: AsyncSession, session_ids: list[uuid.UUID]
    ) -> None:
        """Forget revoked sessions once the revocation is committed (not before: a
        concurrent check could otherwise re-cache the still-live row)."""
        if not session_ids:
            return

        async def forget_revoked_sessions() -> None:
            await self.forget_sessions(session_ids)

        after_commit(session, forget_revoked_sessions)


def _decode_state(encoded: Any) -> tuple[uuid.UUID, Role] | None:
    if encoded == _REVOKED:
        return None
    user_id, role = str(encoded).split("|", 1)
    return uuid.UUID(user_id), Role(role)


def get_identity_runtime(app_or_connection: ASGIApp | HTTPConnection) -> IdentityRuntime:
    """The runtime of a running app, from the app or any request/WebSocket."""
    app: Any = (
        app_or_connection.app
        if isinstance(app_or_connection, HTTPConnection)
        else app_or_connection
    )
    runtime: IdentityRuntime = app.state.identity
    return runtime


def token_verifier(app_or_connection: ASGIApp | HTTPConnection) -> TokenVerifier:
    """`verify_access_token(token) -> Principal | None` bound to a running app."""
    runtime = get_identity_runtime(app_or_connection)
    return runtime.verify_access_token


@asynccontextmanager
async def identity_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
    """Nested in the application's lifespan (after the platform services are open)."""
    services = app.state.services
    runtime = IdentityRuntime(services.settings, services.session_factory, mail_queue_for(services))
    await runtime.open()
    app.state.identity = runtime
    # The WebSocket endpoint and the jobs API authenticate through this hook.
    install_token_verifier(app, runtime.verify_access_token)
    log.info(
        "identity_ready",
        jwt_algorithm=runtime.tokens.algorithm,
        session_check_cache_seconds=services.settings.session_check_cache_seconds,
    )
    try:
        yield {"identity": runtime}
    finally:
        await runtime.close()
