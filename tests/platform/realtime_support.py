"""Shared by the jobs, events and integration tests: a token verifier for tests and an
app factory that installs it (uvicorn subprocesses load it with --factory)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from slipway.app import create_app
from slipway.platform.events.auth import install_token_verifier


@dataclass(frozen=True, slots=True)
class FakePrincipal:
    user_id: uuid.UUID
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in ("staff", "admin")


def token_for(user_id: uuid.UUID, role: str = "customer") -> str:
    """A token the test verifier accepts: `<role>.<user id>`."""
    return f"{role}.{user_id}"


async def verify_test_token(token: str) -> FakePrincipal | None:
    role, _, user_id = token.partition(".")
    if role not in ("customer", "staff", "admin"):
        return None
    try:
        return FakePrincipal(uuid.UUID(user_id), role)
    except ValueError:
        return None


def with_test_verifier(app: FastAPI) -> FastAPI:
    """Install the test verifier once the app's lifespan has started, so it wins over a
    verifier the lifespan installs (the identity area's)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: FastAPI) -> AsyncIterator[Any]:
        async with inner(target) as state:
            install_token_verifier(target, verify_test_token)
            yield state

    app.router.lifespan_context = lifespan
    return app


def create_test_app() -> FastAPI:
    """`uvicorn tests.platform.realtime_support:create_test_app --factory` (settings from env)."""
    return with_test_verifier(create_app())
