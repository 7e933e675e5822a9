"""Processes the tests start, and the guarantee that none outlives the run.

`ManagedProcess` runs a child in its own process group with a log file and readiness
checks. Everything started here (and the servers in services.py) is registered and torn
down on `close()`, at interpreter exit and on SIGTERM, so a crashed or cancelled run does
not leave servers behind on a shared machine.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import NoReturn, Self

import pytest

from .ports import LOOPBACK, ReadinessTimeout, wait_for_http, wait_for_port, wait_until

#: Bounds for anything that can hang: a test run must fail, never stall.
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
APT_TIMEOUT = 900.0


class ServiceUnavailable(RuntimeError):
    """A service cannot be started here (binary missing and not installable, ...)."""


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_or_skip(reason: str) -> NoReturn:
    """Skip a test whose service is missing, but fail under CI, where a skip hides a gap."""
    if running_under_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --- cleanup registry -------------------------------------------------------------------

_cleanups: dict[int, Callable[[], None]] = {}
_cleanup_lock = threading.Lock()


def register(owner: object, cleanup: Callable[[], None]) -> None:
    with _cleanup_lock:
        _cleanups[id(owner)] = cleanup
    _install_sigterm_cleanup()


def unregister(owner: object) -> None:
    with _cleanup_lock:
        _cleanups.pop(id(owner), None)


def cleanup_all() -> None:
    """Stop everything still registered, newest first."""
    with _cleanup_lock:
        pending = list(_cleanups.values())[::-1]
        _cleanups.clear()
    for cleanup in pending:
        try:
            cleanup()
        except Exception:  # teardown must reach every server
            continue


atexit.register(cleanup_all)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # atexit does not run when a CI timeout or `kill` ends the run with SIGTERM, and
    # pg_ctl's daemon would outlive us: stop everything, then die as the signal asks.
    cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_sigterm_cleanup() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


# --- OS packages ------------------------------------------------------------------------

_apt_lock = threading.Lock()
_apt_state = {"updated": False}


def apt_install(package: str) -> bool:
    """Install a Debian package when we may (root on Debian, SLIPWAY_NO_APT unset)."""
    if os.environ.get("SLIPWAY_NO_APT") or os.geteuid() != 0:
        return False
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _apt_lock:
        if not _apt_state["updated"]:
            subprocess.run(
                ["apt-get", "update"],
                env=env,
                capture_output=True,
                timeout=APT_TIMEOUT,
                check=False,
            )
            _apt_state["updated"] = True
        result = subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", package],
            env=env,
            capture_output=True,
            timeout=APT_TIMEOUT,
            check=False,
        )
    return result.returncode == 0


def _which(name: str, search_dirs: Sequence[Path]) -> str | None:
    for directory in search_dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def ensure_binary(name: str, apt_package: str, *, search_dirs: Sequence[Path] = ()) -> str | None:
    """Path of `name`, installing `apt_package` first when it is missing and we may."""
    found = _which(name, search_dirs)
    if found is None and apt_install(apt_package):
        found = _which(name, search_dirs)
    return found


# --- generic managed process ------------------------------------------------------------


def _exited(pid: int) -> bool:
    """Whether child `pid` has exited, without reaping it.

    Leaving the zombie in place keeps its PID (and so its process-group ID) reserved
    until we have swept the group, so a recycled PID can never be signalled by mistake.
    """
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie waiting for its parent to reap it counts as gone."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in {"Z", "X"}


def live_group_members(pgid: int) -> list[int]:
    """PIDs in process group `pgid` that still run (zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[0] not in {"Z", "X"} and fields[2] == str(pgid):
                members.append(int(entry.name))
    return members


class ManagedProcess:
    """A child process in its own process group, with a log file and readiness checks."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.name = name or Path(self.argv[0]).name
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self._owns_log = log_path is None
        if log_path is None:
            fd, created = tempfile.mkstemp(prefix=f"slipway-{self.name}-", suffix=".log")
            os.close(fd)
            log_path = created
        self.log_path = Path(log_path)
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has exited (negative for a signal), else None."""
        if self._popen is None or self.is_running():
            return None
        return self._finish()

    def start(self) -> Self:
        if self.is_running():
            return self
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        register(self, self.close)
        return self

    def is_running(self) -> bool:
        return (
            self._popen is not None
            and self._popen.returncode is None
            and not _exited(self._popen.pid)
        )

    def send_signal(self, sig: int) -> None:
        """Signal the main process only, as `docker stop` or systemd would."""
        if self.is_running():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; TimeoutError when it does not."""
        try:
            wait_until(lambda: not self.is_running(), timeout=timeout, what=f"{self.name} exit")
        except ReadinessTimeout as error:
            raise TimeoutError(str(error)) from error
        return self._finish()

    def stop(
        self, timeout: float = 10.0, sig: int = signal.SIGTERM, *, group: bool = False
    ) -> int | None:
        """Send `sig` (to the main PID, or the whole group), SIGKILL the group after `timeout`.

        Returns the exit code (negative for a signal), or None if never started.
        """
        if self._popen is None:
            return None
        pid = self._popen.pid
        if self._popen.returncode is None and not _exited(pid):
            try:
                if group:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
            with contextlib.suppress(ReadinessTimeout):
                wait_until(lambda: _exited(pid), timeout=timeout, what=f"{self.name} stop")
        return self._finish()

    def _finish(self) -> int:
        """SIGKILL whatever is left of the group, then reap the leader."""
        assert self._popen is not None
        if self._popen.returncode is None:
            # Workers the main process left behind share its group: sweep them while
            # the unreaped leader still holds the group's ID.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._popen.pid, signal.SIGKILL)
            # SIGKILL is delivered asynchronously: wait until the ports and files those
            # processes held are really free before the next test wants them.
            pgid = self._popen.pid
            with contextlib.suppress(ReadinessTimeout):
                wait_until(lambda: not live_group_members(pgid), timeout=10.0, what="process group")
        return self._popen.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        """Stop the process and remove the log file this object created."""
        self.stop()
        unregister(self)
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _explain(self, error: ReadinessTimeout) -> ReadinessTimeout:
        return ReadinessTimeout(f"{self.name}: {error}\n--- last log lines ---\n{self.log_tail()}")

    def wait_for_port(
        self, port: int, host: str = LOOPBACK, timeout: float = STARTUP_TIMEOUT
    ) -> None:
        try:
            wait_for_port(host, port, timeout=timeout, alive=self.is_running)
        except ReadinessTimeout as error:
            raise self._explain(error) from None

    def wait_for_http(
        self, url: str, timeout: float = STARTUP_TIMEOUT, expect_status: int | None = 200
    ) -> None:
        try:
            wait_for_http(url, timeout=timeout, expect_status=expect_status, alive=self.is_running)
        except ReadinessTimeout as error:
            raise self._explain(error) from None

    def wait_until(
        self, predicate: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT
    ) -> None:
        try:
            wait_until(predicate, timeout=timeout, what=what, alive=self.is_running)
        except ReadinessTimeout as error:
            raise self._explain(error) from None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
