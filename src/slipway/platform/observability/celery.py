"""Observability of the Celery worker: its metrics listener (WORKER_METRICS_PORT), and
Sentry and OpenTelemetry in each pool process.

Both SDKs start background threads (event transport, span export) that do not survive a
fork, so they start in every pool process (`worker_process_init`), after the fork.

    install_worker_observability(celery_app, settings)   # from install_worker_hooks
"""

from __future__ import annotations

from typing import Any

from slipway.platform.metrics.celery import install_worker_metrics
from slipway.platform.observability.sentry import init_sentry
from slipway.platform.observability.tracing import init_tracing
from slipway.platform.settings import Settings


def install_worker_observability(celery_app: Any, settings: Settings) -> None:
    from celery import signals

    install_worker_metrics(celery_app, settings)

    def child_started(**_: Any) -> None:
        init_sentry(settings)
        if settings.otel_enabled:
            init_tracing(settings)

    signals.worker_process_init.connect(child_started, weak=False)
