"""Run the real `slipway` command as a child process: clean environment, random port,
stopped by PID. Also imported by the CLI and logging tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.ports import LOOPBACK, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess

#: The console script installed next to this interpreter (what a user types).
SLIPWAY = str(Path(sys.executable).with_name("slipway"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0

_PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def slipway_env(**values: str) -> dict[str, str]:
    """A child environment without the developer's settings, like a fresh shell."""
    env = {key: os.environ[key] for key in _PASSED_THROUGH if key in os.environ}
    env["SECRETS_DIR"] = "/nonexistent-slipway-secrets"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(values)
    return env


def run_slipway(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = COMMAND_TIMEOUT,
    executable: Sequence[str] = (SLIPWAY,),
) -> subprocess.CompletedProcess[str]:
    """Run one short-lived command to completion (bounded by `timeout`)."""
    return subprocess.run(
        [*executable, *args],
        cwd=cwd,
        env=dict(env) if env is not None else slipway_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class SlipwayServer:
    """`slipway serve` on a free loopback port, in its own process group."""

    def __init__(self, process: ManagedProcess, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_lines(self) -> list[str]:
        return [line for line in self.process.log_text().splitlines() if line.strip()]

    def terminate(self) -> int | None:
        """SIGTERM the server (as an orchestrator would) and return its exit code."""
        return self.process.stop(timeout=STOP_TIMEOUT)

    def assert_graceful_stop(self) -> None:
        """SIGTERM ends the server cleanly: lifespan shutdown ran, no SIGKILL needed."""
        code = self.terminate()
        # uvicorn re-raises the signal it caught once shutdown is complete, so the
        # process reports "killed by SIGTERM" after a clean shutdown.
        assert code in (0, -signal.SIGTERM), (code, self.process.log_tail())
        assert "services_closed" in self.process.log_text(), self.process.log_tail()


def start_server(
    cwd: Path,
    env: Mapping[str, str],
    *,
    args: Sequence[str] = (),
    ready_path: str = "/health/live",
    log_path: Path | None = None,
) -> SlipwayServer:
    """Start `slipway serve` and wait until `ready_path` answers 200.

    Another process may grab the free port before the server binds; then retry on a new one.
    """
    last_error: Exception | None = None
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process = ManagedProcess(
            [SLIPWAY, "serve", "--host", LOOPBACK, "--port", str(port), *args],
            name="slipway-serve",
            env=env,
            inherit_env=False,
            cwd=cwd,
            log_path=(log_path or cwd / "serve.log").with_suffix(f".{attempt}.log"),
        )
        process.start()
        try:
            process.wait_for_http(f"http://{LOOPBACK}:{port}{ready_path}", timeout=START_TIMEOUT)
        except Exception as error:
            process.close()
            if "address already in use" not in process.log_text().lower():
                raise
            last_error = error
            continue
        return SlipwayServer(process, port)
    raise RuntimeError(f"slipway serve: no free port after {PORT_ATTEMPTS} tries") from last_error


@pytest.fixture
def servers() -> Iterator[list[SlipwayServer]]:
    """Servers a test started; each is stopped by PID at teardown."""
    started: list[SlipwayServer] = []
    yield started
    for server in started:
        server.process.close()
