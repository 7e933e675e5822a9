"""Loopback ports and readiness polling for the real services tests start."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.05


class ReadinessTimeout(TimeoutError):
    """A service did not become ready in time (or died while we waited)."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a port the kernel just handed out on `host`.

    Another process can still take it before ours binds; callers that can retry
    (a server failing with "address in use") pick a new port and try again.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll `predicate` until it is true; fail fast once `alive` says the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None and not alive():
            raise ReadinessTimeout(f"{what}: the process exited before it was ready")
        if time.monotonic() >= deadline:
            raise ReadinessTimeout(f"{what}: not ready after {timeout:.1f}s")
        time.sleep(POLL_INTERVAL)


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 30.0,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until host:port accepts TCP connections."""
    wait_until(
        lambda: port_is_open(host, port),
        timeout=timeout,
        what=f"tcp {host}:{port}",
        alive=alive,
    )


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """GET `url` and return its status code, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def wait_for_http(
    url: str,
    *,
    timeout: float = 30.0,
    expect_status: int | None = 200,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Wait until `url` answers (with `expect_status`, or any status when it is None)."""

    def ready() -> bool:
        status = http_status(url)
        return status is not None and (expect_status is None or status == expect_status)

    wait_until(ready, timeout=timeout, what=f"GET {url}", alive=alive)
