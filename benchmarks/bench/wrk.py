"""Finding, running and parsing wrk."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .model import WrkResult


class HarnessError(RuntimeError):
    """A condition the harness cannot measure through; the message says what to do."""


def ensure_wrk(*, install: bool = True) -> str:
    """Return wrk's path, installing it from the OS packages when that is possible."""
    found = shutil.which("wrk")
    if found:
        return found
    apt_get = shutil.which("apt-get")
    if install and apt_get and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

        def apt(*args: str) -> None:
            subprocess.run([apt_get, *args], env=env, capture_output=True, timeout=600, check=False)

        apt("install", "-y", "wrk")
        if not shutil.which("wrk"):
            # A fresh container has no package lists yet.
            apt("update")
            apt("install", "-y", "wrk")
        found = shutil.which("wrk")
        if found:
            return found
    raise HarnessError(
        "wrk is not installed and could not be installed automatically. "
        "Install it from the OS packages (Debian/Ubuntu: `sudo apt-get install wrk`; "
        "macOS: `brew install wrk`) and run the benchmark again."
    )


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version then the usage text, and exits 1.
    completed = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first_line = (completed.stdout or completed.stderr).splitlines()
    return first_line[0].strip() if first_line else "unknown"


def build_command(
    wrk: str,
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int,
    cpus: str | None,
    lua_script: Path | None,
    timeout_s: float = 10.0,
) -> list[str]:
    command: list[str] = ["taskset", "-c", cpus] if cpus is not None else []
    command += [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--latency",
        "--timeout",
        # A response slower than this counts as a timeout error, not as a latency. Saturated
        # with 64 connections, a server at 20 req/s answers in ~3 s: still a response.
        f"{max(1, round(timeout_s))}s",
    ]
    if lua_script is not None:
        command += ["-s", str(lua_script)]
    command.append(url)
    return command


def run(
    command: Sequence[str],
    *,
    duration_s: float,
    on_tick: Callable[[float], None] | None = None,
    env: Mapping[str, str] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> WrkResult:
    """Run wrk to completion, killing it if it overruns its duration by a wide margin.

    `stop_when` ends the run early: wrk prints its report when interrupted with SIGINT.
    """
    process = spawn(command, env=env)
    return wait(process, command, duration_s=duration_s, on_tick=on_tick, stop_when=stop_when)


def spawn(command: Sequence[str], *, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env} if env else None,
    )


def wait(
    process: subprocess.Popen[str],
    command: Sequence[str],
    *,
    duration_s: float,
    on_tick: Callable[[float], None] | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> WrkResult:
    deadline = time.monotonic() + duration_s + 20
    last = time.monotonic()
    interrupted = False
    while process.poll() is None:
        now = time.monotonic()
        if now > deadline:
            process.kill()
            process.wait()
            raise HarnessError(f"wrk did not finish within {duration_s + 20:.0f}s: {command}")
        if not interrupted and stop_when is not None and stop_when():
            process.send_signal(signal.SIGINT)
            interrupted = True
        if on_tick is not None:
            on_tick(now - last)
        last = now
        time.sleep(0.05 if stop_when is not None else 0.2)
    if on_tick is not None:
        on_tick(time.monotonic() - last)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise HarnessError(f"wrk exited {process.returncode}: {stderr.strip() or stdout.strip()}")
    return parse(stdout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
# wrk counts every status >= 400 here, despite the wording.
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse(output: str) -> WrkResult:
    """Read wrk's `--latency` report. Latencies come back in milliseconds."""
    percentiles = {
        int(match.group(1)): float(match.group(2)) * _UNITS_MS[match.group(3)]
        for match in _PERCENTILE.finditer(output)
    }
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    if rps is None or total is None or 50 not in percentiles or 99 not in percentiles:
        raise HarnessError(f"could not parse wrk output:\n{output}")
    socket = _SOCKET.search(output)
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests_per_second=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        requests=int(total.group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(value) for value in socket.groups()) if socket else 0,
        duration_s=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000,
    )
