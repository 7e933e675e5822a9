"""One benchmark run: the stack, the servers, warm-up, interleaved rounds, extras, report."""

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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import extras, report, servers, stack, wrk
from .model import LaunchContext, Sample, Scenario, StackInfo, WrkResult
from .registry import SERVERS
from .wrk import HarnessError

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "benchmarks" / "scripts"
# Progress-bar weights, in the same seconds the bar counts for wrk runs.
_STARTUP_WEIGHT_S = 3.0
_EXTRAS_WEIGHT_S = 30.0


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
    seed_plan: stack.SeedPlan = stack.FULL_PLAN
    data_cache: Path | None = None
    extras: bool = True
    # Requests per memory batch (RSS after the first batch, growth over the second).
    memory_requests: int = 10_000
    extra_repeats: int = 3
    timeout_s: float = 10.0
    # Caps every scenario's connections (the smoke run: answers within its 1-second rounds).
    max_connections: int | None = None


@dataclass(frozen=True)
class Measurement:
    result: WrkResult
    server_cpu_pct: float
    client_cpu_pct: float
    background: WrkResult | None = None


@dataclass(frozen=True)
class RunOutcome:
    summaries: list[report.Summary]
    extras: list[extras.ExtraResult]
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
        if not servers.parse_cpus(cpus) <= allowed:
            raise HarnessError(
                f"{label} core(s) {cpus} are not available to this process (allowed: "
                f"{sorted(allowed)}); pass --server-cpus/--client-cpus or --no-pin."
            )


class _Run:
    """State shared by the phases of one run."""

    def __init__(self, config: RunConfig, console: Console, progress: Progress, task: TaskID):
        self.config = config
        self.console = console
        self.progress = progress
        self.task = task
        self.running: dict[str, servers.RunningServer] = {}
        self.stack_info: StackInfo | None = None
        self.wrk_path = ""

    def connections(self, wanted: int | None) -> int:
        count = wanted or self.config.connections
        cap = self.config.max_connections
        return min(count, cap) if cap else count

    def step(self, label: str) -> None:
        self.progress.update(self.task, description=label)

    def tick(self, seconds: float) -> None:
        self.progress.advance(self.task, seconds)

    def context(self, server: servers.RunningServer) -> LaunchContext:
        # The facts learnt after the servers started (tokens) reach every callable.
        return replace(server.ctx, stack=self.stack_info)

    def wrk_env(
        self, scenario: Scenario, ctx: LaunchContext, path: str, label: str
    ) -> dict[str, str]:
        env = {
            "BENCH_SCRIPTS_DIR": str(SCRIPTS_DIR),
            "BENCH_PATH": path,
            # Unique per wrk run: idempotency keys never repeat across rounds or runs.
            "BENCH_RUN_ID": f"{label}-{time.time_ns()}".replace(" ", "_").replace("/", "_"),
        }
        if scenario.wrk_env is not None:
            env.update(scenario.wrk_env(ctx))
        return env

    def measure(self, scenario: Scenario, duration_s: float, label: str) -> Measurement:
        server = self.running[scenario.server]
        ctx = self.context(server)
        self.step(label)
        path = scenario.path_factory(ctx) if scenario.path_factory else scenario.path
        # A script builds its own requests (BENCH_PATH); the URL then only names the server.
        url = server.base_url + ("/" if scenario.lua_script else path)
        client_cpus = (
            (scenario.client_cpus or self.config.client_cpus) if scenario.pin_client else None
        )
        command = wrk.build_command(
            self.wrk_path,
            url,
            duration_s=duration_s,
            connections=self.connections(scenario.connections),
            threads=self.config.threads,
            cpus=client_cpus,
            lua_script=SCRIPTS_DIR / scenario.lua_script if scenario.lua_script else None,
            timeout_s=self.config.timeout_s,
        )
        env = self.wrk_env(scenario, ctx, path, label)
        background = None
        if scenario.background is not None:
            load = scenario.background
            load_env = {
                **env,
                "BENCH_PATH": load.path,
                **(load.wrk_env(ctx) if load.wrk_env else {}),
            }
            background_command = wrk.build_command(
                self.wrk_path,
                server.base_url + "/",
                duration_s=duration_s + 1,
                connections=self.connections(load.connections),
                threads=self.config.threads,
                cpus=client_cpus,
                lua_script=SCRIPTS_DIR / load.lua_script,
                timeout_s=self.config.timeout_s,
            )
            background = wrk.spawn(background_command, env=load_env)
            # The storm must be under way before the probe measures under it.
            time.sleep(0.5)
        server_cpu_before = server.cpu_seconds()
        # wrk is the only child reaped during a measurement, so the children's rusage delta
        # is wrk's own CPU time (both wrk processes for a scenario with background load).
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        try:
            result = wrk.run(command, duration_s=duration_s, on_tick=self.tick, env=env)
        finally:
            background_result = (
                wrk.wait(background, background_command, duration_s=duration_s + 1)
                if background is not None
                else None
            )
        wall = time.monotonic() - started
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        server.check_alive()
        client_cpu = (client_after.ru_utime - client_before.ru_utime) + (
            client_after.ru_stime - client_before.ru_stime
        )
        return Measurement(
            result,
            server_cpu_pct=round(100 * (server.cpu_seconds() - server_cpu_before) / wall, 1),
            client_cpu_pct=round(100 * client_cpu / wall, 1),
            background=background_result,
        )


def _plan_weight(config: RunConfig, scenarios: list[Scenario], server_names: list[str]) -> float:
    return (
        len(server_names) * _STARTUP_WEIGHT_S
        + len(scenarios) * config.warmup_s
        + config.rounds * len(scenarios) * config.duration_s
        + (_EXTRAS_WEIGHT_S if config.extras else 0.0)
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
    needs_stack = config.extras or any(SERVERS[name].needs_stack for name in server_names)
    meta: dict[str, Any] = {
        "timestamp": timestamp,
        "duration_s": config.duration_s,
        "warmup_s": config.warmup_s,
        "rounds": config.rounds,
        "connections": min(config.connections, config.max_connections or config.connections),
        "threads": config.threads,
        "server_cpus": config.server_cpus,
        "client_cpus": config.client_cpus,
        "wrk": wrk.wrk_version(wrk_path),
        "machine": _machine(),
        "versions": _versions(),
        "git_sha": _git_sha(),
        "git_dirty": _git_dirty(),
        "loadavg_start": os.getloadavg(),
        "skipped": skipped,
    }
    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    samples: list[Sample] = []
    extra_results: list[extras.ExtraResult] = []
    server_info: dict[str, Any] = {}
    total = _plan_weight(config, scenarios, server_names)
    progress = Progress(
        TextColumn("[bold]{task.description:<48}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    started_at = time.monotonic()
    try:
        with contextlib.ExitStack() as exit_stack, progress:
            task = progress.add_task("preparing", total=total)
            phases: dict[str, float] = {}
            meta["phases_s"] = phases
            phase_started = time.monotonic()

            def phase(name: str) -> None:
                nonlocal phase_started
                now = time.monotonic()
                phases[name] = round(now - phase_started, 1)
                phase_started = now

            state = _Run(config, console, progress, task)
            state.wrk_path = wrk_path
            if needs_stack:
                pin = servers.parse_cpus(config.client_cpus) if config.client_cpus else None
                owned = stack.Stack(
                    config.seed_plan,
                    workdir=workdir,
                    python=sys.executable,
                    pin_cpus=pin,
                    on_step=state.step,
                    cache_root=config.data_cache,
                )
                exit_stack.callback(owned.close)
                state.stack_info = owned.start()
                meta["stack"] = {
                    "versions": owned.versions,
                    "seed_sizes": dict(config.seed_plan.sizes),
                    "plan": vars(config.seed_plan),
                    "timings": owned.timings,
                    "from_cache": owned.from_cache,
                    "facts": _public_facts(state.stack_info.facts),
                }
            phase("stack")
            _start_servers(state, server_names, workdir, exit_stack, server_info)
            phase("servers")
            if state.stack_info is not None:
                _log_in(state)
            for scenario in scenarios:
                _preflight(state, scenario, server_info)
            phase("preflight")

            if config.warmup_s > 0:
                for scenario in scenarios:
                    state.measure(scenario, config.warmup_s, f"warm-up {scenario.name}")
            for round_index in range(config.rounds):
                # Rotate the order each round so no scenario always runs first or last.
                shift = round_index % len(scenarios)
                for scenario in scenarios[shift:] + scenarios[:shift]:
                    measurement = state.measure(
                        scenario,
                        config.duration_s,
                        f"round {round_index + 1}/{config.rounds} {scenario.name}",
                    )
                    server = state.running[scenario.server]
                    samples.append(
                        Sample(
                            scenario=scenario.name,
                            round=round_index + 1,
                            wrk=measurement.result,
                            memory=server.memory(),
                            loadavg_1m=round(os.getloadavg()[0], 2),
                            server_cpu_pct=measurement.server_cpu_pct,
                            client_cpu_pct=measurement.client_cpu_pct,
                            server_cores=server.cores,
                            background=measurement.background,
                        )
                    )
            phase("measurements")
            if config.extras:
                extra_results = _extras(state, workdir)
                phase("extras")
            progress.update(task, description="done", completed=total)
    finally:
        if config.keep_logs:
            console.print(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    meta["loadavg_end"] = os.getloadavg()
    meta["wall_s"] = round(time.monotonic() - started_at, 1)
    summaries = report.summarise(scenarios, samples)
    found = report.checks(summaries, extra_results)
    console.print(report.rich_table(summaries, title=f"Slipway benchmark {timestamp}"))
    for note in report.background_notes(summaries):
        console.print(note, markup=False)
    if found:
        console.print(report.rich_targets(found, title="Targets (issue 9), same-run ratios"))
    for note in report.warnings(summaries):
        console.print(f"[yellow]warning: {note}", markup=True)
    console.print(
        f"load average {meta['loadavg_start'][0]:.2f} -> {meta['loadavg_end'][0]:.2f}, "
        f"{meta['wall_s']:.0f} s"
    )
    json_path = report.write(
        config.output_dir / f"{timestamp}.json",
        report.to_json(summaries, meta, server_info, extra_results),
    )
    markdown_path = report.write(
        config.output_dir / f"{timestamp}.md", report.markdown(summaries, meta, extra_results)
    )
    chart_path = None
    if config.chart:
        from . import chart  # matplotlib is slow to import and only needed here

        chart_path = chart.render(
            summaries, config.output_dir / f"{timestamp}.png", meta, console, found
        )
    return RunOutcome(summaries, extra_results, json_path, markdown_path, chart_path)


def _start_servers(
    state: _Run,
    names: list[str],
    workdir: Path,
    exit_stack: contextlib.ExitStack,
    server_info: dict[str, Any],
) -> None:
    """Launch every server at once (they boot in parallel), then wait for each."""
    state.step(f"starting {len(names)} servers")
    for name in names:
        server = servers.launch(
            SERVERS[name],
            workdir=workdir,
            repo_root=REPO_ROOT,
            python=sys.executable,
            cpus=state.config.server_cpus,
            stack=state.stack_info,
        )
        exit_stack.callback(server.stop)
        state.running[name] = server
    for name in names:
        server = state.running[name]
        state.step(f"waiting for {name}")
        servers.wait_ready(server)
        server_info[name] = {
            "description": server.spec.description,
            "command": server.command,
            "pinned_to": server.pinned_to,
            "env": _redacted(server.spec.env(server.ctx)),
        }
        state.tick(_STARTUP_WEIGHT_S)


def _log_in(state: _Run) -> None:
    """Tokens of seeded customers, from the first Slipway server (real logins)."""
    assert state.stack_info is not None
    server = next(
        (s for s in state.running.values() if s.spec.needs_stack and s.spec.pin), None
    ) or next((s for s in state.running.values() if s.spec.needs_stack), None)
    if server is None:
        return
    state.step("logging in seeded customers")
    tokens = stack.login_tokens(server.base_url, state.stack_info, stack.ORDER_USERS)
    state.stack_info = replace(state.stack_info, facts={**state.stack_info.facts, "tokens": tokens})


def _preflight(state: _Run, scenario: Scenario, server_info: dict[str, Any]) -> None:
    server = state.running[scenario.server]
    ctx = state.context(server)
    state.step(f"checking {scenario.name}")
    if scenario.preflight is not None:
        problem = scenario.preflight(server.base_url, ctx)
        if problem:
            raise HarnessError(f"{scenario.name}: {problem}")
        return
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


def _extras(state: _Run, workdir: Path) -> list[extras.ExtraResult]:
    """Import time, cold start and memory, with the other servers idle."""
    config = state.config
    spec = SERVERS["slipway"]
    if state.stack_info is None or spec.unavailable() is not None:
        return []
    env = spec.env(LaunchContext(0, workdir, REPO_ROOT, sys.executable, state.stack_info))
    results: list[extras.ExtraResult] = []
    state.step("app import time")
    results += extras.import_time(
        sys.executable,
        env,
        repeats=config.extra_repeats,
        cpus=config.server_cpus,
        workdir=workdir,
    )
    state.tick(_EXTRAS_WEIGHT_S / 4)
    state.step("cold start to ready")
    results += extras.cold_start(
        spec,
        repeats=config.extra_repeats,
        workdir=workdir,
        repo_root=REPO_ROOT,
        python=sys.executable,
        cpus=config.server_cpus,
        stack=state.stack_info,
    )
    state.tick(_EXTRAS_WEIGHT_S / 4)
    state.step(f"RSS over 2 x {config.memory_requests:,} requests")
    facts = state.stack_info.facts
    ctx = LaunchContext(0, workdir, REPO_ROOT, sys.executable, state.stack_info)
    from .registry import deep_page_path, id_range_env, login_env, words_env

    mix_env: Mapping[str, str] = {
        "BENCH_SCRIPTS_DIR": str(SCRIPTS_DIR),
        "BENCH_IDS": ",".join(str(i) for i in facts["cached_product_ids"]),
        "BENCH_ORDER_IDS": ",".join(str(i) for i in facts["order_product_ids"]),
        "BENCH_TOKENS": ",".join(facts.get("tokens", [])),
        "BENCH_DEEP_PATH": deep_page_path(ctx),
        **id_range_env(ctx),
        **words_env(ctx),
        **login_env(ctx),
    }
    results += extras.memory_growth(
        spec,
        requests=config.memory_requests,
        wrk_path=state.wrk_path,
        wrk_env=mix_env,
        script=SCRIPTS_DIR / "mix.lua",
        workdir=workdir,
        repo_root=REPO_ROOT,
        python=sys.executable,
        server_cpus=config.server_cpus,
        client_cpus=config.client_cpus,
        stack=state.stack_info,
    )
    state.tick(_EXTRAS_WEIGHT_S / 2)
    return results


_SECRET_NAMES = ("SECRET_KEY", "PASSWORD", "TOKEN")


def _redacted(env: Mapping[str, str]) -> dict[str, str]:
    return {
        key: ("<redacted>" if any(part in key for part in _SECRET_NAMES) else value)
        for key, value in env.items()
    }


def _public_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """What the JSON keeps of the facts: counts and positions, no credentials."""
    return {
        "large": facts.get("large"),
        "small": facts.get("small"),
        "order_products": len(facts.get("order_product_ids", [])),
        "cached_products": len(facts.get("cached_product_ids", [])),
        "deep_position": facts.get("deep_position"),
        "deep_offset": facts.get("deep_offset"),
        "users": len(facts.get("users", [])),
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
        "sqlalchemy",
        "asyncpg",
        "redis",
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


def _git(*args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        completed = subprocess.run(
            ["git", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return completed.stdout.strip()
    return None


def _git_sha() -> str | None:
    return _git("rev-parse", "HEAD")


def _git_dirty() -> bool | None:
    """Whether the measured tree differs from the commit (uncommitted changes)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)
