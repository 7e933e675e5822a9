"""Bounded load for the reliability scenarios.

Virtual clients, each an `httpx.AsyncClient` on its own loopback source address (127.0.0.N):
the repository's Nginx limits requests per client address (20 r/s), so each client is paced
below that and the proxy sees many clients, as in production. Every request is recorded as an
`Attempt` (start and end on the monotonic clock, status or transport error), so a scenario can
ask what failed, when, and what was in flight at a given instant.

Orders carry an Idempotency-Key; a failed one can be sent again with the same key
(`retry_orders`), which must never create a second order.

The generator stops by itself: at `max_seconds`, or when the scenario calls `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

import httpx

#: Per-request deadline: far above any latency a healthy stack shows, so a hang is a failure
#: rather than a stuck test.
REQUEST_TIMEOUT = 30.0
#: Below the Nginx `api` zone's 20 r/s per client address, refill included.
DEFAULT_RATE_PER_CLIENT = 8.0
ORDERS_PATH = "/api/v1/orders"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request and what came of it."""

    op: str
    client: int
    started: float
    finished: float
    #: The response's status, or None when none came (the error says why).
    status: int | None
    ok: bool
    error: str | None = None
    #: Orders: the request (to send it again with its key) and the order id when created.
    order: OrderRequest | None = None
    order_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return self.finished - self.started

    def describe(self) -> str:
        outcome = f"{self.status} {self.error or ''}" if self.status is not None else self.error
        return f"{self.op} client={self.client} after {self.elapsed:.2f}s: {outcome}"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """Everything needed to send an order again with the same key."""

    path: str
    token: str
    body: dict[str, Any]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Idempotency-Key": self.key}


class Operation(Protocol):
    """One kind of request a virtual client sends."""

    name: str

    async def __call__(self, client: httpx.AsyncClient, client_id: int) -> Attempt: ...


def _transport_error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:300]


@dataclass
class GetJson:
    """GET `path` (or each of `paths` in turn); success is one of `expect`."""

    name: str
    paths: Sequence[str]
    expect: frozenset[int] = frozenset({200})
    keep_headers: tuple[str, ...] = ()
    _next: int = 0

    async def __call__(self, client: httpx.AsyncClient, client_id: int) -> Attempt:
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        started = time.monotonic()
        try:
            response = await client.get(path)
        except httpx.HTTPError as error:
            return Attempt(
                self.name, client_id, started, time.monotonic(), None, ok=False,
                error=_transport_error(error),
            )  # fmt: skip
        ok = response.status_code in self.expect
        return Attempt(
            self.name, client_id, started, time.monotonic(), response.status_code, ok,
            error=None if ok else response.text[:300],
            headers={k: response.headers[k] for k in self.keep_headers if k in response.headers},
        )  # fmt: skip


@dataclass
class PlaceOrder:
    """POST an order for one unit of `product_id` with a fresh Idempotency-Key; expects 201."""

    token: str
    product_id: int
    name: str = "order"
    path: str = ORDERS_PATH

    def request(self) -> OrderRequest:
        body = {"items": [{"product_id": self.product_id, "quantity": 1}]}
        return OrderRequest(self.path, self.token, body, f"rel-{uuid.uuid4().hex}")

    async def __call__(self, client: httpx.AsyncClient, client_id: int) -> Attempt:
        return await send_order(client, self.request(), client_id, self.name)


async def send_order(
    client: httpx.AsyncClient, order: OrderRequest, client_id: int = -1, name: str = "order"
) -> Attempt:
    started = time.monotonic()
    try:
        response = await client.post(order.path, json=order.body, headers=order.headers)
    except httpx.HTTPError as error:
        return Attempt(
            name, client_id, started, time.monotonic(), None, ok=False,
            error=_transport_error(error), order=order,
        )  # fmt: skip
    created = response.status_code == 201
    replayed = response.headers.get("idempotent-replayed")
    return Attempt(
        name, client_id, started, time.monotonic(), response.status_code, created,
        error=None if created else response.text[:300], order=order,
        order_id=str(response.json()["id"]) if created else None,
        headers={"idempotent-replayed": replayed} if replayed else {},
    )  # fmt: skip


@dataclass
class LoadReport:
    attempts: list[Attempt] = field(default_factory=list)

    def of(self, op: str | None = None) -> list[Attempt]:
        return [a for a in self.attempts if op is None or a.op == op]

    def sent(self, op: str | None = None) -> int:
        return len(self.of(op))

    def failures(self, op: str | None = None) -> list[Attempt]:
        return [a for a in self.of(op) if not a.ok]

    def statuses(self, op: str | None = None) -> Counter[str]:
        return Counter(str(a.status) if a.status is not None else "error" for a in self.of(op))

    def quantile(
        self, q: float, op: str | None = None, since: float = -math.inf, until: float = math.inf
    ) -> float:
        """Latency quantile (seconds) of the requests started in [since, until)."""
        times = sorted(a.elapsed for a in self.of(op) if since <= a.started < until)
        if not times:
            return math.nan
        return times[min(len(times) - 1, math.ceil(q * len(times)) - 1)]

    def first(self, predicate: Callable[[Attempt], bool], after: float) -> Attempt | None:
        """The earliest-finished attempt started after `after` that satisfies `predicate`."""
        found = [a for a in self.attempts if a.started >= after and predicate(a)]
        return min(found, key=lambda a: a.finished, default=None)

    def created_order_ids(self) -> set[str]:
        return {a.order_id for a in self.attempts if a.order_id is not None}

    def failure_lines(self, limit: int = 20) -> str:
        return "\n".join(a.describe() for a in self.failures()[:limit])


class LoadGenerator:
    """Clients that each run their operations in turn, paced, until stopped.

    Use as `async with LoadGenerator(...) as load:`; leaving the block stops the clients
    and waits for their last requests.
    """

    def __init__(
        self,
        base_url: str,
        clients: Sequence[Sequence[Operation]],
        *,
        rate_per_client: float = DEFAULT_RATE_PER_CLIENT,
        max_seconds: float = 60.0,
        verify: ssl.SSLContext | bool = False,
        first_address: int = 10,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        assert clients, "no clients"
        assert first_address + len(clients) < 255, "source addresses must stay in 127.0.0.0/24"
        self.base_url = base_url
        self.client_ops = [list(ops) for ops in clients]
        self.interval = 1.0 / rate_per_client
        self.max_seconds = max_seconds
        self.verify = verify
        self.first_address = first_address
        self.timeout = timeout
        self.report = LoadReport()
        self._in_flight_since: dict[int, tuple[str, float]] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: list[httpx.AsyncClient] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def source_address(self, client_id: int) -> str:
        return f"127.0.0.{self.first_address + client_id}"

    async def __aenter__(self) -> Self:
        self.started_at = time.monotonic()
        for client_id, ops in enumerate(self.client_ops):
            transport = httpx.AsyncHTTPTransport(
                verify=self.verify, local_address=self.source_address(client_id)
            )
            http = httpx.AsyncClient(
                base_url=self.base_url, transport=transport, timeout=self.timeout
            )
            self._http.append(http)
            self._tasks.append(asyncio.create_task(self._run_client(client_id, http, ops)))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> LoadReport:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks)
            self._tasks = []
            self.stopped_at = time.monotonic()
        for http in self._http:
            await http.aclose()
        self._http = []
        return self.report

    @property
    def running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() - self.started_at < self.max_seconds

    def in_flight_now(self, op: str) -> list[tuple[int, float]]:
        """(client, start time) of each `op` request sent and not yet answered."""
        return [(c, started) for c, (name, started) in self._in_flight_since.items() if name == op]

    async def wait_for(self, predicate: Callable[[LoadReport], bool], timeout: float) -> bool:
        """Until `predicate(report)` holds (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.report):
                return True
            await asyncio.sleep(0.05)
        return predicate(self.report)

    async def _run_client(
        self, client_id: int, http: httpx.AsyncClient, ops: list[Operation]
    ) -> None:
        # Clients start spread over one interval, so they do not fire in lockstep.
        next_start = time.monotonic() + self.interval * client_id / len(self.client_ops)
        sequence = 0
        while self.running:
            delay = next_start - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            next_start = max(next_start + self.interval, time.monotonic())
            op = ops[sequence % len(ops)]
            sequence += 1
            self._in_flight_since[client_id] = (op.name, time.monotonic())
            try:
                attempt = await op(http, client_id)
            finally:
                del self._in_flight_since[client_id]
            self.report.attempts.append(attempt)


async def retry_orders(
    base_url: str,
    failed: Iterable[Attempt],
    *,
    verify: ssl.SSLContext | bool = False,
    tries: int = 5,
    local_address: str = "127.0.0.250",
) -> list[Attempt]:
    """Send each failed order again with its own Idempotency-Key until it is answered 201
    (created now, or replayed because the first attempt did commit)."""
    results: list[Attempt] = []
    transport = httpx.AsyncHTTPTransport(verify=verify, local_address=local_address)
    async with httpx.AsyncClient(
        base_url=base_url, transport=transport, timeout=REQUEST_TIMEOUT
    ) as client:
        for attempt in failed:
            assert attempt.order is not None, f"not an order: {attempt.describe()}"
            result = attempt
            for n in range(tries):
                result = await send_order(client, attempt.order, name="retry")
                # 409 idempotency_in_progress: the first attempt's transaction is still open.
                if result.ok or result.status not in (None, 409, 502, 503):
                    break
                await asyncio.sleep(0.2 * 2**n)
            results.append(result)
    return results


@dataclass(frozen=True, slots=True)
class ReadinessSample:
    at: float
    status: int | None
    #: The body's overall status ("ok", "degraded", "failing") and each check's status.
    state: str | None = None
    checks: dict[str, str] = field(default_factory=dict)


@dataclass
class ReadinessLog:
    samples: list[ReadinessSample] = field(default_factory=list)

    def first(self, predicate: Callable[[ReadinessSample], bool], after: float) -> float | None:
        """When a sample taken at or after `after` first satisfied `predicate`."""
        return next((s.at for s in self.samples if s.at >= after and predicate(s)), None)


def _readiness_sample(response: httpx.Response) -> ReadinessSample:
    try:
        body = response.json()
    except ValueError:
        return ReadinessSample(time.monotonic(), response.status_code)
    # A 503 carries the checks in the error envelope's details.
    report = body.get("error", {}).get("details") or body
    checks = {name: str(check.get("status")) for name, check in report.get("checks", {}).items()}
    return ReadinessSample(time.monotonic(), response.status_code, report.get("status"), checks)


@asynccontextmanager
async def poll_readiness(url: str, interval: float = 0.1) -> AsyncIterator[ReadinessLog]:
    """GET `url` (/health/ready) every `interval` seconds while the block runs."""
    log = ReadinessLog()
    stop = asyncio.Event()

    async def poll() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                try:
                    log.samples.append(_readiness_sample(await client.get(url)))
                except httpx.HTTPError:
                    log.samples.append(ReadinessSample(time.monotonic(), None))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)

    task = asyncio.create_task(poll())
    try:
        yield log
    finally:
        stop.set()
        await task


async def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` inside the event loop until it holds (True) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def seconds_since(instant: float | None, origin: float) -> float | str:
    """For figures: how long after `origin` something happened, or "never"."""
    return "never" if instant is None else instant - origin
