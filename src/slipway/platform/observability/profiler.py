"""A request profiler for development (pyinstrument): add `?profile=1` to any request and
get pyinstrument's HTML call tree instead of the response.

PROFILER_ENABLED turns it on in development (and testing); production refuses to start
with it (Settings.production_problems), and staging ignores it: a profile exposes code
paths and slows the request down severalfold. pyinstrument is a development dependency
(`uv sync --group dev`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slipway.platform.settings import Environment, Settings

log = structlog.get_logger("slipway.profiler")

TRIGGER = "profile"
#: Sampling interval: 1 ms resolves the app's own frames without swamping short requests.
INTERVAL_SECONDS = 0.001


def _requested(scope: Scope) -> bool:
    query: bytes = scope.get("query_string", b"")
    if b"profile" not in query:  # cheap check before parsing: almost every request
        return False
    values = parse_qs(query.decode("latin-1")).get(TRIGGER, [])
    return any(value in ("1", "true", "html") for value in values)


class ProfilerMiddleware:
    """Profiles the requests that ask for it; the others pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        try:
            from pyinstrument import Profiler
        except ImportError as exc:
            raise RuntimeError(
                "PROFILER_ENABLED=true needs pyinstrument, a development dependency: "
                "`uv sync --group dev`"
            ) from exc
        self._profiler_class: Any = Profiler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _requested(scope):
            await self.app(scope, receive, send)
            return

        status = 500

        async def keep_status(message: Message) -> None:
            # The profile replaces the response; only its status is kept for the title.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        profiler = self._profiler_class(interval=INTERVAL_SECONDS, async_mode="enabled")
        profiler.start()
        try:
            await self.app(scope, receive, keep_status)
        finally:
            profiler.stop()
        log.info("request_profiled", path=scope["path"], status=status)
        body = profiler.output_html().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-profiled-status", str(status).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def profiler_wanted(settings: Settings) -> bool:
    """True when the profiler should be installed: enabled, and in development or testing."""
    if not settings.profiler_enabled:
        return False
    if settings.environment not in (Environment.DEVELOPMENT, Environment.TESTING):
        log.warning("profiler_ignored", environment=settings.environment.value)
        return False
    return True
