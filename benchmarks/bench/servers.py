"""Starting, probing, measuring and stopping the server processes under test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from .model import LaunchContext, ProcessMemory, ServerSpec, StackInfo
from .wrk import HarnessError

_KIB_PER_MIB = 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_cpus(cpus: str) -> set[int]:
    """A taskset core list ("1", "0,1", "0-3") as a set of core numbers."""
    found: set[int] = set()
    for part in cpus.split(","):
        if "-" in part:
            low, high = part.split("-", 1)
            found.update(range(int(low), int(high) + 1))
        elif part:
            found.add(int(part))
    return found


def free_port() -> int:
    """An unused loopback port chosen by the kernel, never one of the well-known dev ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]
    command: list[str]
    ctx: LaunchContext
    pinned_to: str | None = None

    @property
    def cores(self) -> int:
        """Cores the server may run on: the CPU columns are shares of this many."""
        if self.pinned_to is None:
            return len(os.sched_getaffinity(0))
        return len(parse_cpus(self.pinned_to))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        self.log_file.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise HarnessError(
                f"server {self.spec.name} exited with code {code}; last log lines:\n"
                f"{self.log_tail()}"
            )

    def memory(self) -> list[ProcessMemory]:
        """RSS of the server and every process it forked, root first."""
        return [_memory_of(pid) for pid in [self.process.pid, *descendants(self.process.pid)]]

    def cpu_seconds(self) -> float:
        """User plus system CPU time consumed so far by the server and its forks, reaped
        ones included."""
        return sum(
            _cpu_seconds_of(pid) for pid in [self.process.pid, *descendants(self.process.pid)]
        )

    def stop(self) -> None:
        if self.log_file.closed:
            return
        if self.process.poll() is None:
            # The server runs in its own session, so the group holds only processes it started.
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log_file.close()


def launch(
    spec: ServerSpec,
    *,
    workdir: Path,
    repo_root: Path,
    python: str,
    cpus: str | None,
    stack: StackInfo | None = None,
) -> RunningServer:
    """Start the process without waiting: servers boot concurrently, then `wait_ready`."""
    port = free_port()
    server_dir = workdir / spec.name
    server_dir.mkdir(parents=True, exist_ok=True)
    ctx = LaunchContext(
        port=port, workdir=server_dir, repo_root=repo_root, python=python, stack=stack
    )
    pin = (spec.cpus if spec.cpus is not None else cpus) if spec.pin else None
    # Started on every core and pinned once ready (`wait_ready`): several servers booting
    # at once on the one server core would take several times as long.
    command = list(spec.command(ctx))
    log_path = server_dir / "server.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        command,
        # A private working directory keeps the developer's .env and any SQLite files out of it.
        cwd=server_dir,
        env={**os.environ, **spec.env(ctx)},
        stdin=subprocess.DEVNULL,
        # A file, not a pipe: nobody reads during the run and a full pipe would stall the server.
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return RunningServer(spec, process, port, log_path, log_file, command, ctx, pinned_to=pin)


def start(
    spec: ServerSpec,
    *,
    workdir: Path,
    repo_root: Path,
    python: str,
    cpus: str | None,
    stack: StackInfo | None = None,
) -> RunningServer:
    server = launch(
        spec, workdir=workdir, repo_root=repo_root, python=python, cpus=cpus, stack=stack
    )
    wait_ready(server)
    return server


def wait_ready(server: RunningServer) -> None:
    """Block until the server answers 200 on its ready path; stop it and raise otherwise."""
    try:
        _wait_ready(server, server.spec.ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    if server.pinned_to is not None:
        pin_tree(server.process.pid, parse_cpus(server.pinned_to))


def pin_tree(root_pid: int, cpus: set[int]) -> None:
    """Pin a process, every thread of it and its children to `cpus`. Threads and processes
    started later inherit the affinity of the thread that starts them."""
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
        except OSError:
            continue
        for tid in threads:
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                continue


def _wait_ready(server: RunningServer, timeout_s: float) -> None:
    url = server.base_url + server.spec.ready_path
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            server.check_alive()
            try:
                response = client.get(url)
            except httpx.TransportError as exc:
                last_error = repr(exc)
            else:
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            time.sleep(0.1)
    raise HarnessError(
        f"server {server.spec.name} was not ready at {url} within {timeout_s:.0f}s "
        f"({last_error}); last log lines:\n{server.log_tail()}"
    )


def probe(url: str) -> httpx.Response:
    """One request before the load, so a wrong path or status fails loudly instead of fast."""
    with httpx.Client(timeout=5.0) as client:
        return client.get(url)


def descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name sits in parentheses and may hold spaces: split after it.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    pending = [root]
    while pending:
        children = sorted(parents.get(pending.pop(), []))
        found += children
        pending += children
    return found


def _cpu_seconds_of(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # utime, stime, cutime and cstime are fields 14-17 of stat(5); the split starts at
    # field 3. The children's times keep the CPU of workers that exited and were reaped
    # (gunicorn recycling its workers) in the total, which would otherwise go backwards.
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


def _memory_of(pid: int) -> ProcessMemory:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ProcessMemory(pid=pid, rss_mb=0.0, cmdline="(exited)")
    rss_kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return ProcessMemory(pid=pid, rss_mb=round(rss_kb / _KIB_PER_MIB, 1), cmdline=cmdline)
