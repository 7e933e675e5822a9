"""Error tracking (Sentry), tracing (OpenTelemetry) and the development request profiler.

Each piece is optional and off unless its setting turns it on: SENTRY_DSN, OTEL_ENABLED,
PROFILER_ENABLED (development only).
"""
