"""The cost of observability on a product read: metrics off, metrics on, metrics and tracing.

Three Slipway servers, identical but for METRICS_ENABLED (in multiprocess mode, as deployed)
and OTEL_ENABLED, each serving `GET /api/v1/products/1` (a cache hit after the first request,
as most product reads are) and `GET /health/live` (the cheapest route: a fixed per-request
cost weighs the most there).
"metrics on" is divided by "off" in the same round; the issue's target is a cost of 10% or
less (ratio >= 0.9). Tracing exports over OTLP/HTTP to a sink in the harness process, so the
span encoding and export are paid as in production; it has no target, it is measured.

Plug into the registry (bench/registry.py, at its end):

    from scenarios_observability import SCENARIOS as _OBS_SCENARIOS, SERVERS as _OBS_SERVERS
    SERVERS.update(_OBS_SERVERS)
    SCENARIOS.update(_OBS_SCENARIOS)

then `uv run python benchmarks/run.py --scenarios obs_product_metrics,obs_product_tracing`.

Run as a script, this file is the servers' launcher: it migrates and seeds the scratch
database, then execs uvicorn (the PID the harness pins and measures stays the server's).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.model import LaunchContext, Scenario, ServerSpec, Target
from bench.registry import REFERENCE, UVICORN_FLAGS, _slipway_missing

HERE = Path(__file__).resolve()
PRODUCT_PATH = "/api/v1/products/1"


class _SinkHandler(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them, like a collector that keeps up."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return


@cache
def otlp_sink_port() -> int:
    """One sink per harness run, started on first use (the env builder runs more than once)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True).start()
    port: int = server.server_address[1]
    return port


def _launch(ctx: LaunchContext) -> Sequence[str]:
    return [ctx.python, str(HERE), "--port", str(ctx.port)]


def _env(*, metrics: bool, tracing: bool) -> Callable[[LaunchContext], Mapping[str, str]]:
    def build(ctx: LaunchContext) -> Mapping[str, str]:
        env = {
            "ENVIRONMENT": "testing",
            "LOG_FORMAT": "json",
            "DATABASE_URL": f"sqlite+aiosqlite:///{ctx.workdir / 'bench.db'}",
            # One wrk client is one IP: the limiter still runs, but never refuses.
            "RATE_LIMIT_DEFAULT": "100000000/minute",
            "METRICS_ENABLED": "true" if metrics else "false",
            "OTEL_ENABLED": "true" if tracing else "false",
            "PYTHONPATH": str(ctx.repo_root / "benchmarks"),
        }
        if metrics:
            # As in production: multiprocess mode, each update written to a mmap'd file.
            env["PROMETHEUS_MULTIPROC_DIR"] = str(ctx.workdir / "prometheus")
        if tracing:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_sink_port()}"
        return env

    return build


def _server(name: str, description: str, *, metrics: bool, tracing: bool) -> ServerSpec:
    return ServerSpec(
        name=name,
        description=description,
        command=_launch,
        env=_env(metrics=metrics, tracing=tracing),
        ready_path=PRODUCT_PATH,
        unavailable=_slipway_missing,
    )


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        _server(
            "slipway_obs_off", "Slipway, metrics and tracing off", metrics=False, tracing=False
        ),
        _server(
            "slipway_obs_metrics", "Slipway, Prometheus metrics on", metrics=True, tracing=False
        ),
        _server(
            "slipway_obs_tracing",
            "Slipway, metrics and OpenTelemetry tracing (OTLP export) on",
            metrics=True,
            tracing=True,
        ),
    )
}

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="obs_product_off",
            server="slipway_obs_off",
            path=PRODUCT_PATH,
            description="product read (cache hit), metrics and tracing off",
            baseline=REFERENCE,
            quick=False,
        ),
        Scenario(
            name="obs_product_metrics",
            server="slipway_obs_metrics",
            path=PRODUCT_PATH,
            description="product read, Prometheus metrics on (vs off)",
            baseline="obs_product_off",
            target=Target(min_throughput_ratio=0.9),
            quick=False,
        ),
        # The same on the cheapest route, where a fixed per-request cost weighs the most.
        Scenario(
            name="obs_health_off",
            server="slipway_obs_off",
            path="/health/live",
            description="GET /health/live, metrics off",
            baseline=REFERENCE,
            quick=False,
        ),
        Scenario(
            name="obs_health_metrics",
            server="slipway_obs_metrics",
            path="/health/live",
            description="GET /health/live, metrics on (vs off)",
            baseline="obs_health_off",
            target=Target(min_throughput_ratio=0.9),
            quick=False,
        ),
        Scenario(
            name="obs_product_tracing",
            server="slipway_obs_tracing",
            path=PRODUCT_PATH,
            description="product read, metrics and tracing on (vs off)",
            baseline="obs_product_off",
            quick=False,
        ),
    )
}


def _seed() -> None:
    """Schema at head and product 1, in the scratch database of this server."""
    import asyncio

    from slipway.catalog.models import Product
    from slipway.platform.db.engine import create_engine, create_session_factory
    from slipway.platform.db.migrate import upgrade
    from slipway.platform.settings import Settings

    settings = Settings()
    upgrade(settings)

    async def insert() -> None:
        engine = create_engine(settings, null_pool=True)
        try:
            async with create_session_factory(engine)() as session, session.begin():
                if await session.get(Product, 1) is None:
                    session.add(
                        Product(sku="BENCH-1", name="Tea", price_minor=450, currency="EUR", stock=9)
                    )
        finally:
            await engine.dispose()

    asyncio.run(insert())


def main(argv: Sequence[str]) -> None:
    from slipway.platform.metrics import prepare_multiprocess_dir

    port = argv[argv.index("--port") + 1]
    _seed()
    prepare_multiprocess_dir()
    python = sys.executable
    command = [python, "-m", "uvicorn", "slipway.app:create_app", "--factory", *UVICORN_FLAGS]
    os.execv(python, [*command, "--port", port])  # replaces this process: same PID


if __name__ == "__main__":
    main(sys.argv[1:])
