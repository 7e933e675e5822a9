"""One benchmark run: start the servers, warm up, measure interleaved rounds, report."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import report, servers, wrk
from .model import Sample, Scenario, WrkResult
from .registry import SERVERS
from .wrk import HarnessError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "benchmarks" / "scripts"
# Progress-bar weight of one server start, in the same seconds the bar counts for wrk runs.
_STARTUP_WEIGHT_S = 2.0


@dataclass(frozen=True)
class RunConfig:
    duration_s: float
    warmup_s: float
    rounds: int
    connections: int
    threads: int
    server_cpus: str | None
    client_cpus: str | None
    output_dir: Path
    keep_logs: bool
    chart: bool


@dataclass(frozen=True)
class Measurement:
    result: WrkResult
    server_cpu_pct: float
    client_cpu_pct: float


@dataclass(frozen=True)
class RunOutcome:
    summaries: list[report.Summary]
    json_path: Path
    markdown_path: Path
    chart_path: Path | None


def check_pinning(config: RunConfig) -> None:
    if config.server_cpus is None and config.client_cpus is None:
        return
    if shutil.which("taskset") is None:
        raise HarnessError(
            "taskset is missing (Debian: `apt-get install util-linux`); install it or pass --no-pin."
        )
    allowed = os.sched_getaffinity(0)
    for label, cpus in (("server", config.server_cpus), ("client", config.client_cpus)):
        if cpus is None:
            continue
        wanted = {int(cpu) for cpu in cpus.replace("-", ",").split(",") if cpu}
        if not wanted <= allowed:
            raise HarnessError(
                f"{label} core(s) {cpus} are not available to this process (allowed: "
                f"{sorted(allowed)}); pass --server-cpus/--client-cpus or --no-pin."
            )


def run(
    scenarios: list[Scenario],
    config: RunConfig,
    *,
    console: Console,
    skipped: list[dict[str, str]],
) -> RunOutcome:
    wrk_path = wrk.ensure_wrk()
    check_pinning(config)
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    server_names = list(dict.fromkeys(scenario.server for scenario in scenarios))
    meta: dict[str, Any] = {
        "timestamp": timestamp,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "rounds": config.rounds,
        "connections": config.connections,
        "threads": config.threads,
        "server_cpus": config.server_cpus,
        "client_cpus": config.client_cpus,
        "wrk": wrk.wrk_version(wrk_path),
        "machine": _machine(),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "loadavg_start": os.getloadavg(),
        "skipped": skipped,
    }
    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    samples: list[Sample] = []
    server_info: dict[str, Any] = {}
    total = (
        len(server_names) * _STARTUP_WEIGHT_S
        + len(scenarios) * config.warmup_s
        + config.rounds * len(scenarios) * config.duration_s
    )
    progress = Progress(
        TextColumn("[bold]{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    try:
        with contextlib.ExitStack() as stack, progress:
            task = progress.add_task("starting servers", total=total)
            running: dict[str, servers.RunningServer] = {}
            for name in server_names:
                progress.update(task, description=f"starting {name}")
                server = servers.start(
                    SERVERS[name],
                    workdir=workdir,
                    repo_root=REPO_ROOT,
                    python=sys.executable,
                    cpus=config.server_cpus,
                )
                stack.callback(server.stop)
                running[name] = server
                server_info[name] = {
                    "description": server.spec.description,
                    "command": server.command,
                    "env": dict(server.spec.env(server.ctx)),
                }
                progress.advance(task, _STARTUP_WEIGHT_S)
            for scenario in scenarios:
                _check_response(scenario, running[scenario.server], server_info)

            def measure(scenario: Scenario, duration_s: float, label: str) -> Measurement:
                server = running[scenario.server]
                progress.update(task, description=label)
                command = wrk.build_command(
                    wrk_path,
                    server.base_url + scenario.path,
                    duration_s=duration_s,
                    connections=config.connections,
                    threads=config.threads,
                    cpus=scenario.client_cpus or config.client_cpus,
                    lua_script=SCRIPTS_DIR / scenario.lua_script if scenario.lua_script else None,
                )
                server_cpu_before = server.cpu_seconds()
                # wrk is the only child reaped during the run, so the children's rusage
                # delta is wrk's own CPU time.
                client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.monotonic()
                result = wrk.run(
                    command,
                    duration_s=duration_s,
                    on_tick=lambda elapsed: progress.advance(task, elapsed),
                )
                wall = time.monotonic() - started
                client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                server.check_alive()
                client_cpu = (client_after.ru_utime - client_before.ru_utime) + (
                    client_after.ru_stime - client_before.ru_stime
                )
                return Measurement(
                    result,
                    server_cpu_pct=round(
                        100 * (server.cpu_seconds() - server_cpu_before) / wall, 1
                    ),
                    client_cpu_pct=round(100 * client_cpu / wall, 1),
                )

            for scenario in scenarios:
                measure(scenario, config.warmup_s, f"warm-up {scenario.name}")
            for round_index in range(config.rounds):
                # Rotate the order each round so no scenario always runs first or last.
                shift = round_index % len(scenarios)
                for scenario in scenarios[shift:] + scenarios[:shift]:
                    measurement = measure(
                        scenario,
                        config.duration_s,
                        f"round {round_index + 1}/{config.rounds} {scenario.name}",
                    )
                    samples.append(
                        Sample(
                            scenario=scenario.name,
                            round=round_index + 1,
                            wrk=measurement.result,
                            memory=running[scenario.server].memory(),
                            loadavg_1m=round(os.getloadavg()[0], 2),
                            server_cpu_pct=measurement.server_cpu_pct,
                            client_cpu_pct=measurement.client_cpu_pct,
                        )
                    )
            progress.update(task, description="done", completed=total)
    finally:
        if config.keep_logs:
            console.print(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["loadavg_end"] = os.getloadavg()
    summaries = report.summarise(scenarios, samples)
    console.print(report.rich_table(summaries, title=f"Slipway benchmark {timestamp}"))
    for note in report.warnings(summaries):
        console.print(f"[yellow]warning: {note}", markup=True)
    json_path = report.write(
        config.output_dir / f"{timestamp}.json", report.to_json(summaries, meta, server_info)
    )
    markdown_path = report.write(
        config.output_dir / f"{timestamp}.md", report.markdown(summaries, meta)
    )
    chart_path = None
    if config.chart:
        from . import chart  # matplotlib is slow to import and only needed here

        chart_path = chart.render(summaries, config.output_dir / f"{timestamp}.png", meta, console)
    return RunOutcome(summaries, json_path, markdown_path, chart_path)


def _check_response(
    scenario: Scenario, server: servers.RunningServer, server_info: dict[str, Any]
) -> None:
    if scenario.lua_script is not None:
        return  # the script decides method and body; a plain GET would prove nothing
    response = servers.probe(server.base_url + scenario.path)
    if response.status_code != scenario.expected_status:
        raise HarnessError(
            f"{scenario.name}: GET {scenario.path} answered {response.status_code}, expected "
            f"{scenario.expected_status}: {response.text[:300]}"
        )
    server_info[server.spec.name].setdefault("responses", {})[scenario.path] = {
        "status": response.status_code,
        "body": response.text[:200],
        "header_names": sorted(response.headers.keys()),
        "header_bytes": sum(len(k) + len(v) + 4 for k, v in response.headers.items()),
    }


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in (
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "pydantic",
        "slipway",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def _machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "kernel": platform.release(),
    }


def _git_sha() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return completed.stdout.strip()
    return None
