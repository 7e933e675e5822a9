"""The one app factory: middleware in order, error handlers, routers, typed lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.httpsredirect import HTTPSRedirectMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from slipway.api import api_router
from slipway.platform import health
from slipway.platform.docs import DOCS_PREFIXES, install_docs
from slipway.platform.errors import ERROR_RESPONSES, install_error_handlers
from slipway.platform.logging import configure_logging
from slipway.platform.middleware.access_log import AccessLogMiddleware
from slipway.platform.middleware.body_limit import BodySizeLimitMiddleware
from slipway.platform.middleware.request_id import RequestIdMiddleware
from slipway.platform.middleware.security_headers import SecurityHeadersMiddleware
from slipway.platform.middleware.server_error import ServerErrorEnvelopeMiddleware
from slipway.platform.services import lifespan_for
from slipway.platform.settings import Settings, get_settings

OPENAPI_URL = "/openapi.json"
QUIET_PREFIXES = ("/health", "/metrics")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application. Nothing connects until the lifespan starts."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.effective_log_format)

    docs_on = settings.docs_on
    app = FastAPI(
        title=settings.app_name,
        version=settings.app_version,
        debug=False,  # never render tracebacks in responses, even with DEBUG on
        openapi_url=OPENAPI_URL if docs_on else None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan_for(settings),
        responses=ERROR_RESPONSES,
    )
    app.state.settings = settings

    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(api_router)
    if docs_on:
        install_docs(app, openapi_url=OPENAPI_URL)

    # add_middleware prepends, so add from innermost to outermost; the request sees them
    # in the reverse of this order (see the numbered comments).
    # 9. HTTPS redirect, when TLS terminates in front of us and the proxy says http.
    if settings.https_redirect:
        app.add_middleware(HTTPSRedirectMiddleware)
    # 8. GZip above 1 KB.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    # 7. CORS with explicit origins only (never "*" with credentials).
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-Match",
                "If-None-Match",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID", "ETag", "Location", "Link", "Retry-After"],
            max_age=600,
        )
    # 6. Trusted hosts.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    # 5. Body-size limit: 413 above MAX_BODY_SIZE, chunked bodies included.
    app.add_middleware(BodySizeLimitMiddleware, max_body_size=settings.max_body_size)
    # 4. Unhandled exceptions become the 500 envelope inside the header layers.
    app.add_middleware(ServerErrorEnvelopeMiddleware)
    # 3. Security headers on every response.
    app.add_middleware(
        SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds, docs_prefixes=DOCS_PREFIXES
    )
    # 2. Access log: one line per request, after the client IP is resolved.
    app.add_middleware(AccessLogMiddleware, quiet_prefixes=QUIET_PREFIXES)
    # 1. Request ID first, so every later layer and log line has it.
    app.add_middleware(RequestIdMiddleware)
    # 0. Client address and scheme from trusted proxies only (FORWARDED_ALLOW_IPS); done in
    #    the app so every server (uvicorn, gunicorn, hypercorn, granian) behaves the same.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    return app
