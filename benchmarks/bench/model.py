"""The vocabulary of the harness: servers, scenarios, targets and measured samples."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StackInfo:
    """The PostgreSQL and Redis the suite started, and the databases it seeded.

    `databases` maps a logical name ("large", "small") to a SQLAlchemy URL; `facts` holds what
    the harness learnt from the seeded data (ids, users, a deep cursor) for scenarios to use.
    """

    redis_url: str
    databases: Mapping[str, str]
    secret_key: str
    seed_sizes: Mapping[str, int]
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchContext:
    """What a server needs to know to start: its port and a private scratch directory."""

    port: int
    workdir: Path
    repo_root: Path
    python: str
    # Present when any selected server asked for the PostgreSQL + Redis stack.
    stack: StackInfo | None = None


CommandBuilder = Callable[[LaunchContext], Sequence[str]]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server process. Several scenarios may share one server."""

    name: str
    description: str
    command: CommandBuilder
    env: Callable[[LaunchContext], Mapping[str, str]] = lambda _ctx: {}
    # Polled until it answers 200 before any load is sent.
    ready_path: str = "/"
    # Returns a reason when the server cannot run in this checkout (e.g. the app is not written yet).
    unavailable: Callable[[], str | None] = lambda: None
    # Cores the server is pinned to; None means the run's server cores.
    cpus: str | None = None
    # False: never pinned (the N-workers scenarios spread over every core).
    pin: bool = True
    # Needs the suite's PostgreSQL and Redis (started, migrated and seeded before it).
    needs_stack: bool = False
    # Seconds to wait for readiness (workers and migrations take longer than a hello world).
    ready_timeout_s: float = 60.0


@dataclass(frozen=True)
class Target:
    """A goal stated as ratios against the scenario's baseline, measured in the same round."""

    min_throughput_ratio: float | None = None
    max_p99_ratio: float | None = None
    # Median latency: the "latency" of the deep-page and search targets.
    max_p50_ratio: float | None = None
    # Total errors over every round (status >= 400 and socket errors).
    max_errors: int | None = None

    def describe(self) -> str:
        parts = []
        if self.min_throughput_ratio is not None:
            parts.append(f"rps ≥{self.min_throughput_ratio:g}x")
        if self.max_p50_ratio is not None:
            parts.append(f"p50 ≤{self.max_p50_ratio:g}x")
        if self.max_p99_ratio is not None:
            parts.append(f"p99 ≤{self.max_p99_ratio:g}x")
        if self.max_errors is not None:
            parts.append(f"errors ≤{self.max_errors}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Load:
    """A second wrk run alongside a scenario's measured one (the login storm under which
    the /health/live probe is measured)."""

    path: str
    lua_script: str
    connections: int
    description: str
    wrk_env: Callable[[LaunchContext], Mapping[str, str]] | None = None


@dataclass(frozen=True)
class Scenario:
    """One wrk measurement: a server, a request, and what it is compared against."""

    name: str
    server: str
    path: str
    description: str
    # Scenario name whose same-round figures divide this one's; None marks the reference.
    baseline: str | None = None
    # A wrk Lua script under benchmarks/scripts/, for methods, headers or bodies.
    lua_script: str | None = None
    expected_status: int = 200
    target: Target | None = None
    is_baseline: bool = False
    # Part of the `--quick` subset.
    quick: bool = True
    # Cores for wrk; None means the run's default client core.
    client_cpus: str | None = None
    # False: wrk runs on any core (the N-workers scenarios).
    pin_client: bool = True
    # wrk connections; None means the run's default.
    connections: int | None = None
    # The path computed once the stack is up (a deep cursor); overrides `path`.
    path_factory: Callable[[LaunchContext], str] | None = None
    # Environment for wrk, read by the Lua script (ids, tokens, words).
    wrk_env: Callable[[LaunchContext], Mapping[str, str]] | None = None
    # Runs concurrently with the measured load; its figures are reported alongside.
    background: Load | None = None
    # One request before the load; returns a problem or None. Defaults to a GET of the path
    # that must answer `expected_status` (skipped for scripted scenarios).
    preflight: Callable[[str, LaunchContext], str | None] | None = None
    # Where the scenario came from (a scenarios_*.py file), for the report.
    origin: str = "registry"


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    duration_s: float

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + self.socket_errors


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    rss_mb: float
    cmdline: str


@dataclass
class Sample:
    """One scenario measured once, in one round."""

    scenario: str
    round: int
    wrk: WrkResult
    memory: list[ProcessMemory] = field(default_factory=list)
    loadavg_1m: float = 0.0
    # Share of one core used while loaded: a server well under 100% was not the bottleneck,
    # and a wrk near 100% may have been.
    server_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    # How many cores the server may use (1 when pinned to one core).
    server_cores: int = 1
    background: WrkResult | None = None

    @property
    def requests_per_cpu_second(self) -> float:
        """Throughput per second of server CPU: the cost of a request, which contention
        from other processes on the machine distorts far less than wall-clock throughput."""
        if self.server_cpu_pct <= 0:
            return 0.0
        return self.wrk.requests_per_second / (self.server_cpu_pct / 100)

    @property
    def rss_per_worker_mb(self) -> float:
        """The largest worker: with one process that is the server itself."""
        if not self.memory:
            return 0.0
        workers = self.memory[1:] or self.memory
        return max(process.rss_mb for process in workers)
