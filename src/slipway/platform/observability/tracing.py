"""OpenTelemetry traces, on when OTEL_ENABLED=true, exported over OTLP/HTTP.

Instrumented: FastAPI (server spans; health and metrics routes excluded), SQLAlchemy (a
child span per statement, on the app's own engine), Redis, httpx and Celery. Every log line
written inside a span carries its `trace_id` and `span_id`, so a trace and its log lines
find each other.

One tracer provider per process, created on first use: the library instrumentations patch
classes process-wide and cannot be applied twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind
from structlog.types import EventDict, WrappedLogger

from slipway.platform.logging import register_processor
from slipway.platform.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

#: Regexes against `scheme://host/path`: probes and scrapes would be most of the traces.
EXCLUDED_URLS = r"^[a-z]+://[^/]+/health(/.*)?$,^[a-z]+://[^/]+/metrics$"
OTLP_TRACES_PATH = "/v1/traces"

# The process's provider once created (a dict, not a rebound global).
_state: dict[str, TracerProvider] = {}


class EntryPointSampler(Sampler):
    """Starts traces only at entry points: a request (server), a job (consumer) or a
    message sent outside any of them (producer), at OTEL_SAMPLE_RATIO.

    A SQL statement or Redis call without a parent is dropped: it comes from something
    deliberately untraced (health probes, the metrics refresher), and would otherwise
    be a one-span trace per probe.
    """

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind not in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER):
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"EntryPointSampler({self._ratio.get_description()})"


def add_trace_ids(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the current span's ids on every line written inside a span."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def otlp_traces_endpoint(base: str | None) -> str | None:
    """OTEL_EXPORTER_OTLP_ENDPOINT-style base URL -> the traces URL (None: exporter default)."""
    if not base:
        return None
    base = base.rstrip("/")
    return base if base.endswith(OTLP_TRACES_PATH) else base + OTLP_TRACES_PATH


def init_tracing(
    settings: Settings, *, span_processor: SpanProcessor | None = None
) -> TracerProvider:
    """The process's tracer provider, created once; later calls return the same one.

    `span_processor` replaces the batched OTLP export (tests pass an in-memory exporter).
    """
    existing = _state.get("provider")
    if existing is not None:
        return existing
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.version": settings.release,
            "deployment.environment.name": settings.environment.value,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(root=EntryPointSampler(settings.otel_sample_ratio))
    )
    if span_processor is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = OTLPSpanExporter(
            endpoint=otlp_traces_endpoint(settings.otel_exporter_otlp_endpoint)
        )
        span_processor = BatchSpanProcessor(exporter)
    provider.add_span_processor(span_processor)
    trace.set_tracer_provider(provider)

    RedisInstrumentor().instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    register_processor(add_trace_ids)
    _state["provider"] = provider
    return provider


def instrument_app(app: FastAPI, settings: Settings) -> None:
    """Server spans for `app` (it becomes the outermost layer, so every log line of the
    request, the access line included, is written inside the span)."""
    if not settings.otel_enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    provider = init_tracing(settings)
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=EXCLUDED_URLS,
        # One span per ASGI send/receive message doubles the span count for nothing.
        exclude_spans=["receive", "send"],
    )


def instrument_engine(engine: AsyncEngine, settings: Settings) -> None:
    """A span per SQL statement on `engine` (the lifespan calls this once per engine)."""
    if not settings.otel_enabled:
        return
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import NoOpMeterProvider

    provider = init_tracing(settings)
    tracer = trace.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__, provider)
    # The instrumentation also counts pool connections as OTel metrics; those come from
    # Prometheus here (platform/metrics/pool.py), so its meter is a no-op.
    usage: Any = (
        NoOpMeterProvider()
        .get_meter("slipway")
        .create_up_down_counter("db.client.connections.usage")
    )
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]
