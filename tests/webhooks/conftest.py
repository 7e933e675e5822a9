"""Webhook test support: a real HTTP receiver on loopback that fails on demand, and an app
whose settings admit loopback targets (the one allowance tests need)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.factories import Person, staff
from tests.support.ports import LOOPBACK

WEBHOOKS = "/api/v1/webhooks"
#: Breaker settings small enough to watch every transition within a test.
THRESHOLD = 3
RESET_SECONDS = 1


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A stdlib HTTP server in a thread: records every request, answers `status` (or the
    next value of `plan`), optionally after `delay` seconds."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    status: int = 204
    plan: list[int] = field(default_factory=list)
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook", host: str = LOOPBACK) -> str:
        return f"http://{host}:{self.port}{path}"

    def fail_with(self, status: int) -> None:
        self.status = status

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def answer(self, request: Received) -> tuple[int, float]:
        with self.lock:
            self.requests.append(request)
            status = self.plan.pop(0) if self.plan else self.status
            return status, self.delay


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        received = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        status, delay = self.server.receiver.answer(received)
        if delay:
            time.sleep(delay)
        self.send_response(status)
        for name, value in self.server.receiver.headers.items():
            self.send_header(name, value)
        payload = self.server.receiver.body
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer((LOOPBACK, 0), _Handler)
    server.daemon_threads = True
    receiver = Receiver(server)
    server.receiver = receiver  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Tests change single values with indirect parametrisation."""
    extra: dict[str, Any] = getattr(request, "param", {})
    return {
        "rate_limit_enabled": False,
        "webhook_allow_loopback": True,
        "webhook_breaker_threshold": THRESHOLD,
        "webhook_breaker_reset_seconds": RESET_SECONDS,
        "webhook_timeout_seconds": 2.0,
        "webhook_connect_timeout_seconds": 1.0,
        # Retries of failed deliveries come quickly in tests.
        "jobs_retry_backoff": 1,
        "jobs_retry_backoff_max": 1,
        **extra,
    }


@pytest.fixture
async def admin(client: httpx.AsyncClient, app: FastAPI) -> Person:
    return await staff(client, app)


async def register(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    url: str,
    events: list[str] | None = None,
) -> httpx.Response:
    return await client.post(
        WEBHOOKS,
        json={"url": url, "event_types": events or ["order.created", "order.status_changed"]},
        headers=headers,
    )


async def register_ok(
    client: httpx.AsyncClient, headers: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = await register(client, headers, url, events)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body
