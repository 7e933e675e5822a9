"""The periodic purge deletes what can no longer authenticate anyone, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from slipway.identity.models import AuthSession, OneTimeToken, RefreshToken
from slipway.platform.jobs.purge import run_purges
from tests.identity.conftest import ME, Outbox, new_account


async def count(app: FastAPI, model: type) -> int:
    async with app.state.services.session_factory() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_purge_removes_expired_and_long_revoked_rows(
    app: FastAPI, client: httpx.AsyncClient, outbox: Outbox
) -> None:
    live = await new_account(client)
    expired = await new_account(client)
    revoked_long_ago = await new_account(client)
    await client.post("/api/v1/auth/logout", headers=revoked_long_ago.headers)
    now = datetime.now(UTC)
    async with app.state.services.session_factory() as session, session.begin():
        expired_sid = (
            await session.execute(
                select(AuthSession.id).order_by(AuthSession.created_at).offset(1).limit(1)
            )
        ).scalar_one()
        await session.execute(
            update(AuthSession)
            .where(AuthSession.id == expired_sid)
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == expired_sid)
            .values(expires_at=now - timedelta(seconds=1))
        )
        await session.execute(
            update(AuthSession)
            .where(AuthSession.revoked_at.is_not(None))
            .values(revoked_at=now - timedelta(days=30))
        )
        # One of the three verification tokens has expired.
        first_token = (
            (await session.execute(select(OneTimeToken.id).order_by(OneTimeToken.created_at)))
            .scalars()
            .first()
        )
        await session.execute(
            update(OneTimeToken)
            .where(OneTimeToken.id == first_token)
            .values(expires_at=now - timedelta(seconds=1))
        )
    assert await count(app, AuthSession) == 3

    deleted = await run_purges(app.state.services)

    # The expired refresh token, the expired and the revoked session (its refresh token goes
    # with it, by cascade), and the expired verification token.
    assert deleted["identity"] == 1 + 2 + 1
    assert await count(app, AuthSession) == 1
    assert await count(app, RefreshToken) == 1
    assert await count(app, OneTimeToken) == 2
    assert (await client.get(ME, headers=live.headers)).status_code == 200
    assert (await client.get(ME, headers=expired.headers)).status_code == 401


async def test_purge_keeps_rotated_tokens_until_they_expire(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    account = await new_account(client)
    await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})

    await run_purges(app.state.services)

    # The spent token is still known, so its reuse is still detected as theft.
    reuse = await client.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reuse.status_code == 401
    async with app.state.services.session_factory() as session:
        reasons = (await session.execute(select(AuthSession.revoked_reason))).scalars().all()
    assert reasons == ["refresh_token_reuse"]
