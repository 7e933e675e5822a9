"""Server comparison: the same Slipway app and route under each server `slipway serve` runs.

Four servers, each started exactly as production starts it (`slipway serve --server X
--workers 1`, so every server gets Slipway's own configuration: uvicorn's draining
protocol, the gunicorn config and worker, the Hypercorn supervisor, Granian's ASGI
interface), all pinned to the same core and serving `GET /health/live` through the full
middleware stack. uvicorn is the reference: the other three are reported as ratios against
it in the same round, and uvicorn itself against the bare FastAPI baseline.

The whole process tree is measured (a gunicorn, Hypercorn or Granian master plus its one
worker), so req/CPU-s includes what each supervisor costs.

Registered from bench/registry.py; run just these with

    uv run python benchmarks/run.py --scenarios servers_gunicorn,servers_hypercorn,servers_granian

(servers_uvicorn and bare_fastapi, the baselines they divide by, are added automatically).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

from bench.model import CommandBuilder, LaunchContext, Scenario, ServerSpec
from bench.registry import REFERENCE, _slipway_missing

ROUTE = "/health/live"
SERVER_NAMES = ("uvicorn", "gunicorn", "hypercorn", "granian")
BASELINE = "servers_uvicorn"


def _serve(server: str) -> CommandBuilder:
    def build(ctx: LaunchContext) -> Sequence[str]:
        # The venv's interpreter running the CLI in this process: the PID the harness pins
        # and measures is the server's (or its master's, whose workers are its children).
        return [
            ctx.python,
            "-m",
            "slipway",
            "serve",
            "--server",
            server,
            "--host",
            "127.0.0.1",
            "--port",
            str(ctx.port),
            "--workers",
            "1",
        ]

    return build


def _env(ctx: LaunchContext) -> Mapping[str, str]:
    return {
        "ENVIRONMENT": "testing",
        "LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite+aiosqlite:///{ctx.workdir / 'bench.db'}",
        # gunicorn reads this before WORKERS; --workers 1 wins anyway, this keeps a
        # developer's shell value out of the measurement.
        "WEB_CONCURRENCY": "1",
    }


def _unavailable(server: str) -> str | None:
    missing = _slipway_missing()
    if missing is not None:
        return missing
    module = {"gunicorn": "uvicorn_worker"}.get(server, server)
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (uv sync)"
    return None


def _spec(server: str) -> ServerSpec:
    return ServerSpec(
        name=f"slipway_{server}",
        description=f"Slipway under `slipway serve --server {server} --workers 1`",
        command=_serve(server),
        env=_env,
        ready_path=ROUTE,
        unavailable=lambda: _unavailable(server),
    )


SERVERS: dict[str, ServerSpec] = {spec.name: spec for spec in map(_spec, SERVER_NAMES)}

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name=BASELINE,
            server="slipway_uvicorn",
            path=ROUTE,
            description="GET /health/live, slipway serve --server uvicorn (server reference)",
            baseline=REFERENCE,
            quick=False,
        ),
        *(
            Scenario(
                name=f"servers_{server}",
                server=f"slipway_{server}",
                path=ROUTE,
                description=f"GET /health/live, slipway serve --server {server} (vs uvicorn)",
                baseline=BASELINE,
                quick=False,
            )
            for server in SERVER_NAMES[1:]
        ),
    )
}
