"""Oversized and malformed request bodies against a running server, with its memory watched."""

from __future__ import annotations

import asyncio
import gzip
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Figures
from tests.reliability.support import (
    AppServer,
    Buyer,
    Proxy,
    seed_shop,
    server_env,
    start_proxy,
    vm_status,
)
from tests.support.services import PostgresService

MIB = 1024 * 1024
#: The app's MAX_BODY_SIZE default (1 MiB) and Nginx's client_max_body_size (2m).
APP_LIMIT = MIB
NGINX_LIMIT = 2 * MIB
NESTING = 100_000
#: What the gzip bomb would inflate to, were anything to inflate it.
BOMB_INFLATED = 100 * MIB
ROUNDS = 5
CONCURRENCY = 4
RSS_GROWTH_LIMIT = 50 * MIB
ORDERS = "/api/v1/orders"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes | Callable[[], AsyncIterator[bytes]]
    expect: int
    code: str
    headers: tuple[tuple[str, str], ...] = ()


def _json_case(name: str, body: bytes) -> Case:
    return Case(name, body, 422, "validation_error")


def _chunked(size: int) -> Callable[[], AsyncIterator[bytes]]:
    async def chunks() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            yield b" " * 65536
            sent += 65536

    return chunks


def hostile_cases() -> list[Case]:
    line = b'{"product_id": 1, "quantity": 1},'
    oversized = b'{"items": [' + line * (2 * APP_LIMIT // len(line)) + b"]}"
    return [
        Case("oversized (Content-Length)", oversized, 413, "payload_too_large"),
        Case("oversized (chunked)", _chunked(2 * APP_LIMIT), 413, "payload_too_large"),
        Case(
            "gzip bomb",
            gzip.compress(b"\0" * BOMB_INFLATED, compresslevel=9),
            415,
            "unsupported_media_type",
            (("content-encoding", "gzip"),),
        ),
        Case(
            "gzip JSON",
            gzip.compress(b'{"items": [{"product_id": 1, "quantity": 1}]}'),
            415,
            "unsupported_media_type",
            (("content-encoding", "gzip"),),
        ),
        _json_case("100k nested arrays", b"[" * NESTING + b"]" * NESTING),
        _json_case("100k nested objects", b'{"a":' * NESTING + b"1" + b"}" * NESTING),
        _json_case("100k-digit integer", b'{"items": [{"product_id": ' + b"9" * NESTING + b"}]}"),
        _json_case("not UTF-8", b'{"items": "\xff\xfe\xfd"}'),
        _json_case("truncated", b'{"items": [{"product_id": 1,'),
        _json_case("200k list items", b'{"items": [' + b'"x",' * 200_000 + b'"x"]}'),
    ]


@dataclass
class App:
    server: AppServer
    buyer: Buyer
    proxy: Proxy


@pytest.fixture(scope="module")
def app(
    postgres_server: PostgresService, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[App]:
    dbname = f"hostile_{uuid.uuid4().hex[:8]}"
    postgres_server.create_database(dbname, template=pg_template)
    workdir = tmp_path_factory.mktemp("hostile-input")
    # One uvicorn process: the PID that parses the bodies is the PID whose memory we read.
    server = AppServer("app", server_env(postgres_server.url(dbname)), workdir, server="uvicorn")
    proxy: Proxy | None = None
    try:
        server.start()
        shop = seed_shop(postgres_server, dbname, server.url("/api/v1/auth/login"), buyers=1)
        proxy = start_proxy(workdir, [server])
        yield App(server, shop.buyers[0], proxy)
    finally:
        if proxy is not None:
            proxy.close()
        server.close()
        postgres_server.drop_database(dbname)


async def send(client: httpx.AsyncClient, case: Case, token: str) -> httpx.Response:
    content = case.body if isinstance(case.body, bytes) else case.body()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return await client.post(ORDERS, content=content, headers={**headers, **dict(case.headers)})


class PeakRss:
    """The highest VmRSS of `pid`, sampled every 10 ms in a thread, plus the kernel's own
    high-water mark (VmHWM) reset at the start when /proc/PID/clear_refs allows it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = vm_status(pid, "VmRSS")
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.hwm_reset = False

    def __enter__(self) -> PeakRss:
        with suppress(OSError):
            # "5" resets the peak RSS (Linux 4.0+).
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.hwm_reset = True
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm_reset:
            self.peak = max(self.peak, vm_status(self.pid, "VmHWM"))
        self.after = vm_status(self.pid, "VmRSS")

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, vm_status(self.pid, "VmRSS"))


def _check(response: httpx.Response, case: Case) -> str | None:
    """What is wrong with the answer to `case`, if anything."""
    if response.status_code != case.expect:
        return f"{case.name}: {response.status_code} {response.text[:200]}"
    if response.json()["error"]["code"] != case.code:
        return f"{case.name}: {response.text[:200]}"
    return None


async def test_hostile_bodies_are_refused_with_bounded_memory(app: App, figures: Figures) -> None:
    """Claim: oversized bodies (declared or chunked) get 413; gzip-encoded bodies, bombs
    included, get 415 (the app never decompresses a request body: refusing says why, and
    nothing inflates); deeply nested JSON (100k levels), huge integers, non-UTF-8 and
    truncated JSON get 422. The server answers every one of them, concurrently and
    repeatedly, without crashing, and its resident memory grows by less than 50 MB."""
    server, token = app.server, app.buyer.token
    cases = hostile_cases()
    pid = server.pid
    problems: list[str] = []
    statuses: dict[str, set[int]] = {}
    async with httpx.AsyncClient(base_url=server.url(""), timeout=30) as client:
        # Warm-up: first-use imports and allocations are not what is measured.
        for case in cases:
            await send(client, case, token)

        async def attacker() -> None:
            for _ in range(ROUNDS):
                for case in cases:
                    response = await send(client, case, token)
                    statuses.setdefault(case.name, set()).add(response.status_code)
                    if (problem := _check(response, case)) is not None:
                        problems.append(problem)

        with PeakRss(pid) as rss:
            await asyncio.gather(*(attacker() for _ in range(CONCURRENCY)))
        ready = await client.get("/health/ready")

    figures(
        "hostile input",
        requests=len(cases) * ROUNDS * CONCURRENCY,
        unexpected=len(problems),
        statuses={name: sorted(codes) for name, codes in statuses.items()},
        rss_before_mib=rss.before / MIB,
        rss_peak_growth_mib=(rss.peak - rss.before) / MIB,
        rss_after_growth_mib=(rss.after - rss.before) / MIB,
        peak_from_kernel_hwm=rss.hwm_reset,
    )
    assert problems == [], problems[:10]
    assert server.pid == pid
    assert server.is_running()
    assert ready.status_code == 200
    assert rss.peak - rss.before < RSS_GROWTH_LIMIT


async def test_hostile_bodies_through_nginx(app: App, figures: Figures) -> None:
    """Claim: behind the repository's Nginx, bodies over its client_max_body_size (2 MiB)
    stop at Nginx with 413; larger than the app's 1 MiB but within Nginx's limit reach the
    app and get its 413 envelope; gzip bodies get the app's 415 and deeply nested JSON its
    422."""
    proxy, token = app.proxy, app.buyer.token
    line = b'{"product_id": 1, "quantity": 1},'
    cases = [
        ("over nginx's limit", b" " * (NGINX_LIMIT + MIB), 413, None),
        ("over the app's limit", b'{"items": [' + line * (APP_LIMIT // len(line) + 1000) + b"]}", 413, "payload_too_large"),
        ("gzip", gzip.compress(b"{}"), 415, "unsupported_media_type"),
        ("nested", b"[" * NESTING + b"]" * NESTING, 422, "validation_error"),
    ]  # fmt: skip
    transport = httpx.AsyncHTTPTransport(verify=proxy.ssl_context(), local_address="127.0.0.220")
    seen: dict[str, str] = {}
    async with httpx.AsyncClient(
        base_url=proxy.base_url, transport=transport, timeout=30
    ) as client:
        for name, body, status, code in cases:
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if name == "gzip":
                headers["Content-Encoding"] = "gzip"
            response = await client.post(ORDERS, content=body, headers=headers)
            seen[name] = f"{response.status_code} {response.headers.get('content-type')}"
            assert response.status_code == status, (name, response.text[:200])
            if code is not None:
                assert response.json()["error"]["code"] == code
    figures("hostile input via nginx", answers=seen)
