"""Every server and scenario the suite knows. Add new ones here; the runner needs no change.

A new scenario is one `Scenario(...)` entry: name it, point it at a server in `SERVERS` (or add
one), give the path, an optional wrk Lua script from benchmarks/scripts/, the scenario it is
compared with and its target. Scenarios that share a server share one process for the run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

from .model import CommandBuilder, LaunchContext, Scenario, ServerSpec, Target

# Identical for every uvicorn-served scenario so only the application differs. Uvicorn's own
# access log is off because Slipway writes its own; the server and date headers stay at their
# defaults. `--workers 1` runs uvicorn in-process, without a supervisor.
UVICORN_FLAGS: tuple[str, ...] = (
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--timeout-graceful-shutdown",
    "5",
)


def uvicorn_command(app: str, *, factory: bool = False) -> CommandBuilder:
    def build(ctx: LaunchContext) -> Sequence[str]:
        # The venv's interpreter directly, not `uv run`: the PID we hold is then the server
        # itself, which is what gets pinned, measured for RSS and stopped.
        command = [ctx.python, "-m", "uvicorn", app, *UVICORN_FLAGS, "--port", str(ctx.port)]
        if factory:
            command.append("--factory")
        return command

    return build


def _baselines_env(ctx: LaunchContext) -> Mapping[str, str]:
    return {"PYTHONPATH": str(ctx.repo_root / "benchmarks" / "baselines")}


def _slipway_env(ctx: LaunchContext) -> Mapping[str, str]:
    return {
        "ENVIRONMENT": "testing",
        "LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite+aiosqlite:///{ctx.workdir / 'bench.db'}",
    }


def _slipway_missing() -> str | None:
    if importlib.util.find_spec("slipway") is None:
        return "the slipway package is not installed in this environment"
    if importlib.util.find_spec("slipway.app") is None:
        return "slipway.app does not exist yet"
    return None


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            name="raw_asgi",
            description="raw ASGI callable (benchmarks/baselines/raw_asgi.py)",
            command=uvicorn_command("raw_asgi:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="bare_starlette",
            description="Starlette, one route (benchmarks/baselines/starlette_app.py)",
            command=uvicorn_command("starlette_app:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="bare_fastapi",
            description="FastAPI, one async route (benchmarks/baselines/fastapi_app.py)",
            command=uvicorn_command("fastapi_app:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="slipway",
            description="Slipway create_app() with its full middleware stack, SQLite",
            command=uvicorn_command("slipway.app:create_app", factory=True),
            env=_slipway_env,
            ready_path="/health/live",
            unavailable=_slipway_missing,
        ),
    )
}

REFERENCE = "bare_fastapi"

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="raw_asgi",
            server="raw_asgi",
            path="/",
            description='raw ASGI app returning {"status":"ok"}',
            baseline=REFERENCE,
            is_baseline=True,
        ),
        Scenario(
            name="bare_starlette",
            server="bare_starlette",
            path="/",
            description='bare Starlette app returning {"status":"ok"}',
            baseline=REFERENCE,
            is_baseline=True,
        ),
        Scenario(
            name=REFERENCE,
            server="bare_fastapi",
            path="/",
            description='bare FastAPI async route returning {"status":"ok"}',
            is_baseline=True,
        ),
        Scenario(
            name="slipway_health_live",
            server="slipway",
            path="/health/live",
            description="Slipway GET /health/live through the full middleware stack",
            baseline=REFERENCE,
            target=Target(min_throughput_ratio=0.8, max_p99_ratio=1.5),
        ),
    )
}


def resolve(names: Sequence[str] | None, *, quick: bool) -> list[Scenario]:
    """The scenarios to run, in registry order, with every baseline they divide by added."""
    if names:
        unknown = [name for name in names if name not in SCENARIOS]
        if unknown:
            known = ", ".join(SCENARIOS)
            raise KeyError(f"unknown scenario(s): {', '.join(unknown)} (known: {known})")
        wanted = set(names)
    else:
        wanted = {name for name, scenario in SCENARIOS.items() if scenario.quick or not quick}
    pending = list(wanted)
    while pending:
        baseline = SCENARIOS[pending.pop()].baseline
        if baseline is not None and baseline not in wanted:
            wanted.add(baseline)
            pending.append(baseline)
    return [scenario for name, scenario in SCENARIOS.items() if name in wanted]
