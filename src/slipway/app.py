"""The one app factory: middleware in order, error handlers, routers, typed lifespan."""

from __future__ import annotations

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from slipway.api import api_router
from slipway.platform import health
from slipway.platform.docs import DOCS_PREFIXES, install_docs
from slipway.platform.errors import ERROR_RESPONSES, install_error_handlers
from slipway.platform.events.router import router as events_router
from slipway.platform.logging import configure_logging
from slipway.platform.metrics.middleware import MetricsMiddleware
from slipway.platform.metrics.runtime import install_metrics
from slipway.platform.middleware.access_log import AccessLogMiddleware
from slipway.platform.middleware.body_limit import BodySizeLimitMiddleware
from slipway.platform.middleware.content_encoding import RequestContentEncodingMiddleware
from slipway.platform.middleware.cors import CORSMiddleware
from slipway.platform.middleware.gzip import GZipIfAcceptedMiddleware
from slipway.platform.middleware.https_redirect import HTTPSRedirectExceptHealthMiddleware
from slipway.platform.middleware.request_id import RequestIdMiddleware
from slipway.platform.middleware.security_headers import SecurityHeadersMiddleware
from slipway.platform.middleware.server_error import ServerErrorEnvelopeMiddleware
from slipway.platform.middleware.trusted_host import TrustedHostMiddleware
from slipway.platform.observability.profiler import ProfilerMiddleware, profiler_wanted
from slipway.platform.observability.sentry import init_sentry
from slipway.platform.observability.testing_routes import install_observability_testing_routes
from slipway.platform.observability.tracing import instrument_app
from slipway.platform.ratelimit import RateLimitMiddleware
from slipway.platform.services import lifespan_for
from slipway.platform.settings import Environment, Settings, get_settings
from slipway.platform.testing_routes import install_testing_routes
from slipway.serving.testing_routes import install_serving_testing_routes

OPENAPI_URL = "/openapi.json"
QUIET_PREFIXES = ("/health", "/metrics")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application. Nothing connects until the lifespan starts."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.effective_log_format)
    # Before any route is built: Sentry's FastAPI integration wraps handlers as they are
    # created. No-op without SENTRY_DSN.
    init_sentry(settings)

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
    health.install_fast_liveness(app)
    app.include_router(api_router)
    app.include_router(events_router)
    if docs_on:
        install_docs(app, openapi_url=OPENAPI_URL)
    # GET /metrics, guarded by METRICS_EXPOSURE (absent when it is "port").
    install_metrics(app, settings)
    # Cache and rate-limit probes for the acceptance tests: ENVIRONMENT=testing only, never
    # in development, staging or production.
    if settings.environment is Environment.TESTING:
        install_testing_routes(app)
        install_serving_testing_routes(app)
        install_observability_testing_routes(app)
        from slipway.platform.jobs.testing_routes import router as jobs_testing_router

        app.include_router(jobs_testing_router)

    # add_middleware prepends, so add from innermost to outermost; the request sees them
    # in the reverse of this order (see the numbered comments).
    # 9. HTTPS redirect, when TLS terminates in front of us and the proxy says http
    #    (health probes exempt: they arrive over plain HTTP on the pod network).
    if settings.https_redirect:
        app.add_middleware(HTTPSRedirectExceptHealthMiddleware)
    # 8. GZip above 1 KB, for clients that accept it.
    app.add_middleware(GZipIfAcceptedMiddleware, minimum_size=1024)
    # 7a. Default per-client rate limit on RATE_LIMIT_PATHS (/api) and the RateLimit-*
    #     headers; inside CORS so a 429 still carries the CORS headers a browser needs.
    app.add_middleware(
        RateLimitMiddleware,
        paths=settings.rate_limit_paths,
        exempt=settings.rate_limit_exempt_paths,
    )
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
            expose_headers=[
                "X-Request-ID",
                "ETag",
                "Location",
                "Link",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )
    # 6. Trusted hosts.
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    # 5. Body-size limit: 413 above MAX_BODY_SIZE, chunked bodies included.
    app.add_middleware(BodySizeLimitMiddleware, max_body_size=settings.max_body_size)
    # 4a. Request bodies with a Content-Encoding: 415 before anything reads them. The app
    #     never inflates a body, so a decompression bomb costs nothing.
    app.add_middleware(RequestContentEncodingMiddleware)
    # 4. Unhandled exceptions become the 500 envelope inside the header layers.
    app.add_middleware(ServerErrorEnvelopeMiddleware)
    # 3. Security headers on every response.
    app.add_middleware(
        SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds, docs_prefixes=DOCS_PREFIXES
    )
    # 2. Access log: one line per request, after the client IP is resolved.
    app.add_middleware(AccessLogMiddleware, quiet_prefixes=QUIET_PREFIXES)
    # 1b. Metrics right inside the request id, so they time and count everything below,
    #     the 500s the envelope layer renders included (labels: route template, never path).
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware)
    # 1a. Development profiler (?profile=1, never in production): outside the security
    #     headers, so the API's CSP does not block its HTML page.
    if profiler_wanted(settings):
        app.add_middleware(ProfilerMiddleware)
    # 1. Request ID first, so every later layer and log line has it.
    app.add_middleware(RequestIdMiddleware)
    # 0. Client address and scheme from trusted proxies only (FORWARDED_ALLOW_IPS); done in
    #    the app so every server (uvicorn, gunicorn, hypercorn, granian) behaves the same.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    # -1. OpenTelemetry server spans (OTEL_ENABLED) wrap the whole stack, so every log line
    #     of a request, the access line included, is written inside its span.
    instrument_app(app, settings)
    return app
