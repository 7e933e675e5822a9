"""Liveness (no I/O), readiness (database and Redis under short timeouts) and build info."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel
from sqlalchemy import text
from starlette.routing import Route

from slipway.platform.errors import ServiceUnavailableError
from slipway.platform.services import Services, ServicesDep

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_SECONDS = 2.0


class LiveRead(BaseModel):
    status: Literal["ok"]


class CheckRead(BaseModel):
    status: Literal["ok", "failing", "skipped"]
    required: bool
    latency_ms: float | None = None
    error: str | None = None


class ReadyRead(BaseModel):
    status: Literal["ok", "degraded", "failing"]
    checks: dict[str, CheckRead]


class InfoRead(BaseModel):
    name: str
    version: str
    environment: str
    git_sha: str | None


# Liveness is polled constantly: answer with pre-serialised bytes (no encoder pass).
_LIVE_BODY = b'{"status":"ok"}'


@router.get("/health/live", response_model=LiveRead, summary="Liveness probe (no I/O)")
async def live() -> Response:
    """The process is up and its event loop answers."""
    return Response(_LIVE_BODY, media_type="application/json")


@router.get("/health", response_model=LiveRead, summary="Liveness alias for load balancers")
async def health() -> Response:
    """Alias of /health/live."""
    return Response(_LIVE_BODY, media_type="application/json")


async def _live_probe(_request: Request) -> Response:
    return Response(_LIVE_BODY, media_type="application/json")


def install_fast_liveness(app: FastAPI) -> None:
    """Serve the liveness probes from plain Starlette routes placed first in the router.

    Load balancers and kubelets poll these several times a second per instance. A FastAPI
    route pays for dependency solving and request parsing on every call (measured here at
    about twice the cost of the whole middleware stack); the probe needs neither. The
    FastAPI routes above stay registered so the OpenAPI schema documents both paths, with
    the same `LiveRead` body; these routes answer first with identical bytes. Every
    middleware layer still applies.
    """
    for path in ("/health/live", "/health"):
        app.router.routes.insert(0, Route(path, _live_probe, methods=["GET", "HEAD"]))


async def _timed(name: str, required: bool, probe: asyncio.Future[object] | object) -> CheckRead:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            await probe  # type: ignore[misc]
    except TimeoutError:
        return CheckRead(status="failing", required=required, error="timeout")
    except Exception as exc:  # the check reports, it never raises
        return CheckRead(status="failing", required=required, error=type(exc).__name__)
    return CheckRead(
        status="ok", required=required, latency_ms=round((time.perf_counter() - start) * 1000, 2)
    )


async def _database_probe(services: Services) -> None:
    async with services.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def run_checks(services: Services) -> ReadyRead:
    checks: dict[str, CheckRead] = {}
    checks["database"] = await _timed("database", True, _database_probe(services))
    if services.redis is not None:
        checks["redis"] = await _timed(
            "redis", services.settings.redis_required, services.redis.ping()
        )
    else:
        checks["redis"] = CheckRead(status="skipped", required=False)
    failing_required = any(c.status == "failing" and c.required for c in checks.values())
    failing_any = any(c.status == "failing" for c in checks.values())
    status: Literal["ok", "degraded", "failing"] = (
        "failing" if failing_required else "degraded" if failing_any else "ok"
    )
    return ReadyRead(status=status, checks=checks)


@router.get("/health/ready", response_model=ReadyRead, summary="Readiness probe")
async def ready(services: ServicesDep) -> ReadyRead:
    """Database (SELECT 1) and Redis (PING) answer within their timeouts; 503 otherwise."""
    result = await run_checks(services)
    if result.status == "failing":
        # Still the error envelope, with every check's status in the details.
        raise ServiceUnavailableError(
            "A required dependency is failing.", code="not_ready", details=result.model_dump()
        )
    return result


@router.get("/info", response_model=InfoRead, summary="Build information")
async def info(services: ServicesDep) -> InfoRead:
    """Name, version, environment and git sha of this build."""
    s = services.settings
    return InfoRead(
        name=s.app_name, version=s.app_version, environment=s.environment.value, git_sha=s.git_sha
    )
