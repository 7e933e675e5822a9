"""Measurements that are not a wrk run: import time, cold start, memory per worker.

Each yields an `ExtraResult` with its goal from the issue, so the report lists it with the
ratio targets.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from . import servers, wrk
from .model import LaunchContext, ServerSpec, StackInfo
from .wrk import HarnessError

IMPORT_LIMIT_S = 0.8
COLD_START_LIMIT_S = 2.0
RSS_LIMIT_MB = 150.0
# "No growth" over the second batch, with room for allocator noise: a leak of 300 bytes a
# request over 10k requests would exceed it.
GROWTH_LIMIT_MB = 3.0

# Prints the import time, then the time create_app() takes (settings, routes, middleware).
_IMPORT_SNIPPET = (
    "import time; started = time.perf_counter(); import slipway.app; "
    "imported = time.perf_counter(); slipway.app.create_app(); "
    "print(imported - started, time.perf_counter() - imported)"
)
_IMPORTTIME_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)\s*$")


@dataclass
class ExtraResult:
    name: str
    description: str
    value: float
    unit: str
    limit: float
    details: dict[str, Any] = field(default_factory=dict)
    # Short, for the targets table and the chart.
    label: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit

    @property
    def goal(self) -> str:
        return f"≤ {self.limit:g} {self.unit}"


def _pinned(command: Sequence[str], cpus: str | None) -> list[str]:
    return [*(["taskset", "-c", cpus] if cpus else []), *command]


def _timed_python(
    python: str, snippet: str, env: Mapping[str, str], cpus: str | None
) -> tuple[float, ...]:
    completed = subprocess.run(
        _pinned([python, "-c", snippet], cpus),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise HarnessError(f"`python -c {snippet!r}` failed:\n{completed.stderr[-2000:]}")
    return tuple(float(value) for value in completed.stdout.strip().splitlines()[-1].split())


def import_time(
    python: str, env: Mapping[str, str], *, repeats: int, cpus: str | None, workdir: Path
) -> list[ExtraResult]:
    """`import slipway.app` timed in fresh processes, plus `-X importtime`'s heaviest
    modules (where the time goes) and the time create_app() takes (informational)."""
    timings = [_timed_python(python, _IMPORT_SNIPPET, env, cpus) for _ in range(repeats)]
    samples = [timing[0] for timing in timings]
    create = [timing[1] for timing in timings]
    completed = subprocess.run(
        _pinned([python, "-X", "importtime", "-c", "import slipway.app"], cpus),
        env={**os.environ, **env},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return [
        ExtraResult(
            name="app_import",
            description="`import slipway.app` in a fresh interpreter (median)",
            label="import slipway.app, fresh process",
            value=round(statistics.median(samples), 3),
            unit="s",
            limit=IMPORT_LIMIT_S,
            details={
                "samples_s": [round(sample, 3) for sample in samples],
                "create_app_s": round(statistics.median(create), 3),
                "heaviest_imports": heaviest_imports(completed.stderr),
            },
        )
    ]


def heaviest_imports(importtime_output: str, top: int = 15) -> list[dict[str, Any]]:
    """`-X importtime`'s self times summed per top-level package: what each distribution
    costs to import, wherever in the tree it is first pulled in."""
    totals: dict[str, int] = {}
    for line in importtime_output.splitlines():
        match = _IMPORTTIME_LINE.match(line)
        if match is None:
            continue
        self_us, _cumulative_us, _indent, module = match.groups()
        package = module.split(".")[0]
        totals[package] = totals.get(package, 0) + int(self_us)
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
    return [{"package": package, "self_ms": round(us / 1000, 1)} for package, us in ranked]


def cold_start(
    spec: ServerSpec,
    *,
    repeats: int,
    workdir: Path,
    repo_root: Path,
    python: str,
    cpus: str | None,
    stack: StackInfo | None,
) -> list[ExtraResult]:
    """Process start to the first 200 on /health/ready (database and Redis checked)."""
    samples = []
    for attempt in range(repeats):
        started = time.monotonic()
        server = servers.launch(
            # Pinned from the first instruction: the start is measured on the server core.
            replace(spec, name=f"cold_start_{attempt + 1}", command=_pinned_command(spec, cpus)),
            workdir=workdir,
            repo_root=repo_root,
            python=python,
            cpus=cpus,
            stack=stack,
        )
        try:
            samples.append(_first_ready(server, started))
        finally:
            server.stop()
    return [
        ExtraResult(
            name="cold_start",
            description="`slipway serve` start to the first 200 on /health/ready (median)",
            label="process start to 200 on /health/ready",
            value=round(statistics.median(samples), 3),
            unit="s",
            limit=COLD_START_LIMIT_S,
            details={"samples_s": [round(sample, 3) for sample in samples]},
        )
    ]


def _pinned_command(spec: ServerSpec, cpus: str | None) -> Callable[[LaunchContext], Sequence[str]]:
    def build(ctx: LaunchContext) -> Sequence[str]:
        return _pinned(spec.command(ctx), cpus)

    return build


def _first_ready(server: servers.RunningServer, started: float, timeout_s: float = 60.0) -> float:
    url = server.base_url + "/health/ready"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - started < timeout_s:
            server.check_alive()
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            # Short: the poll interval bounds the measurement's resolution.
            time.sleep(0.01)
    raise HarnessError(f"{server.spec.name} was not ready within {timeout_s:.0f}s")


def memory_growth(
    spec: ServerSpec,
    *,
    requests: int,
    wrk_path: str,
    wrk_env: Mapping[str, str],
    script: Path,
    workdir: Path,
    repo_root: Path,
    python: str,
    server_cpus: str | None,
    client_cpus: str | None,
    stack: StackInfo | None,
    on_tick: Callable[[float], None] | None = None,
) -> list[ExtraResult]:
    """RSS of a fresh worker after `requests` mixed API requests, then its growth over as
    many again."""
    server = servers.launch(
        replace(spec, name="memory"),
        workdir=workdir,
        repo_root=repo_root,
        python=python,
        cpus=server_cpus,
        stack=stack,
    )
    try:
        servers.wait_ready(server)
        idle = _worker_rss(server)
        batches = []
        for batch in (1, 2):
            done_file = workdir / f"memory-batch-{batch}.done"
            command = wrk.build_command(
                wrk_path,
                server.base_url + "/",
                duration_s=600,
                connections=16,
                threads=1,
                cpus=client_cpus,
                lua_script=script,
            )
            result = wrk.run(
                command,
                duration_s=600,
                on_tick=on_tick,
                env={
                    **wrk_env,
                    "BENCH_STOP_AFTER": str(requests),
                    "BENCH_DONE_FILE": str(done_file),
                    "BENCH_RUN_ID": f"memory-{batch}-{time.time_ns()}",
                },
                stop_when=done_file.exists,
            )
            server.check_alive()
            batches.append(
                {
                    "requests": result.requests,
                    "errors": result.errors,
                    "rss_mb": _worker_rss(server),
                }
            )
    finally:
        server.stop()
    first, second = batches
    details = {"idle_rss_mb": idle, "batches": batches, "workers": "1 (uvicorn in-process)"}
    return [
        ExtraResult(
            name="rss_after_requests",
            description=f"RSS of the worker after {requests:,} mixed API requests (2% logins)",
            label=f"worker RSS after {requests:,} requests",
            value=first["rss_mb"],
            unit="MB",
            limit=RSS_LIMIT_MB,
            details=details,
        ),
        ExtraResult(
            name="rss_growth",
            description=f"RSS growth over the next {requests:,} requests",
            label=f"RSS growth over the next {requests:,}",
            value=round(second["rss_mb"] - first["rss_mb"], 1),
            unit="MB",
            limit=GROWTH_LIMIT_MB,
            details=details,
        ),
    ]


def _worker_rss(server: servers.RunningServer) -> float:
    memory = server.memory()
    workers = memory[1:] or memory
    return max(process.rss_mb for process in workers)
