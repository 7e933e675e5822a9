"""What the reliability scenarios run: `slipway serve` processes on fixed loopback ports (so a
restarted instance comes back where the proxy expects it), the repository's Nginx in front
of them (rendered and started by the Nginx end-to-end test's own helpers), and a shop's data:
verified buyers logged in, each with a product in stock to order, and products to read.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from slipway.catalog.models import Product
from slipway.identity.models import User
from tests.conftest import TEST_SECRET
from tests.deploy.nginx_support import make_self_signed
from tests.factories import PASSWORD, product_row, user_row
from tests.integration.conftest import SLIPWAY, slipway_env
from tests.integration.test_nginx_e2e import Stack, _start_nginx
from tests.support.ports import LOOPBACK, ReadinessTimeout, free_port
from tests.support.services import PORT_ATTEMPTS, ManagedProcess, PostgresService

START_TIMEOUT = 90.0
#: Gunicorn's graceful timeout for these servers: far above any request the load sends.
GRACEFUL_TIMEOUT = 10
WORKERS = 2
#: Stock per product: the load never runs out (a 409 would count as a failure).
STOCK = 1_000_000


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of every app server in these scenarios (a clean one, as in a unit);
    `extra` adds to it or overrides it."""
    values = {
        "ENVIRONMENT": "testing",
        "SECRET_KEY": TEST_SECRET,
        "LOG_FORMAT": "json",
        # Warnings and errors only: the per-request access line would cost CPU the load needs.
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": database_url,
        "WEB_CONCURRENCY": str(WORKERS),
        "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT),
        "FORWARDED_ALLOW_IPS": "127.0.0.1",
        # Order confirmations run in-process (mail to the log): no Celery worker here.
        "JOBS_BACKEND": "embedded",
        # The load comes from a handful of addresses at ~8 r/s each; the limiter has its own
        # tests (and the Redis outage scenario turns it back on).
        "RATE_LIMIT_ENABLED": "false",
        "DB_POOL_TIMEOUT": "30",
    }
    return slipway_env(**{**values, **extra})


def children(pid: int) -> set[int]:
    """Live child processes of `pid` (a gunicorn master's workers)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] not in {"Z", "X"}:
            found.add(int(entry.name))
    return found


def vm_status(pid: int, field_name: str) -> int:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field_name} not in /proc/{pid}/status")


class AppServer:
    """`slipway serve --server gunicorn` (WEB_CONCURRENCY workers; or one uvicorn process)
    on one fixed port."""

    def __init__(
        self, name: str, env: Mapping[str, str], workdir: Path, *, server: str = "gunicorn"
    ) -> None:
        self.name = name
        self.env = dict(env)
        self.workdir = workdir
        self.server = server
        self.port = free_port()
        self.generation = 0
        self.process: ManagedProcess | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.address}{path}"

    def start(self, timeout: float = START_TIMEOUT, *, all_workers: bool = True) -> Self:
        """Start and wait until /health/ready answers 200 (what an orchestrator waits for),
        and with `all_workers` until every worker has answered too.

        The first start may move to another port when someone took this one; a restart
        must come back on the same port, where the proxy sends requests.
        """
        may_move = self.process is None
        for attempt in range(PORT_ATTEMPTS):
            self.generation += 1
            env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{self.name}-prom")}
            self.process = ManagedProcess(
                [SLIPWAY, "serve", "--server", self.server, "--host", LOOPBACK,
                 "--port", str(self.port)],
                name=f"{self.name}-{self.generation}",
                env=env,
                inherit_env=False,
                cwd=self.workdir,
                log_path=self.workdir / f"{self.name}.{self.generation}.log",
            ).start()  # fmt: skip
            try:
                self.process.wait_for_http(self.url("/health/ready"), timeout=timeout)
            except ReadinessTimeout:
                self.process.close()
                in_use = "address already in use" in self.process.log_text().lower()
                if in_use and may_move and attempt + 1 < PORT_ATTEMPTS:
                    self.port = free_port()
                    continue
                raise
            if all_workers and self.server == "gunicorn":
                self.wait_for_workers(timeout=timeout)
            return self
        raise AssertionError("unreachable")

    def worker_pids(self) -> set[int]:
        return children(self.pid) if self.server == "gunicorn" else {self.pid}

    def serving_pids(self, samples: int = 16) -> set[int]:
        """PIDs that answered /_test/slow directly (bypassing any proxy)."""
        pids: set[int] = set()
        with httpx.Client(timeout=10) as client:
            for _ in range(samples):
                try:
                    pids.add(int(client.get(self.url("/_test/slow?ms=20")).json()["pid"]))
                except (httpx.HTTPError, ValueError, KeyError):
                    continue
        return pids

    def wait_for_workers(self, count: int = WORKERS, timeout: float = START_TIMEOUT) -> set[int]:
        """Until `count` workers exist and each has answered a request."""
        assert self.process is not None
        seen: set[int] = set()

        def all_serving() -> bool:
            workers = self.worker_pids()
            seen.update(self.serving_pids(samples=8))
            return len(workers) == count and workers <= seen

        self.process.wait_until(all_serving, what=f"{count} {self.name} workers", timeout=timeout)
        return self.worker_pids()

    def terminate(self, timeout: float = GRACEFUL_TIMEOUT + 20) -> tuple[int, float]:
        """SIGTERM (as an orchestrator sends it) and wait for the exit: (exit code, seconds)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        return code, time.monotonic() - started

    def send_signal(self, sig: int) -> None:
        """Signal the master only, as an operator or orchestrator would."""
        assert self.process is not None
        self.process.send_signal(sig)

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll `predicate`; fail early (with the log) if the server dies meanwhile."""
        assert self.process is not None
        self.process.wait_until(predicate, what=what, timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines) if self.process is not None else ""

    def close(self) -> None:
        if self.process is not None:
            self.process.close()


# --- Nginx ----------------------------------------------------------------------------------


@dataclass
class NginxLog:
    """The JSON access lines Nginx has written so far, read incrementally."""

    path: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    def refresh(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            if raw.startswith(b"{"):
                self.lines.append(json.loads(raw))
        return self.lines


def served_by(line: Mapping[str, Any]) -> str:
    """The upstream that answered (the last one tried when Nginx retried)."""
    return str(line.get("upstream_addr", "")).split(",")[-1].strip()


def retried(line: Mapping[str, Any]) -> bool:
    """Nginx tried more than one upstream for this request."""
    return "," in str(line.get("upstream_addr", ""))


@dataclass
class Proxy:
    """The repository's Nginx, terminating TLS in front of `servers`."""

    stack: Stack
    log: NginxLog

    @property
    def base_url(self) -> str:
        return f"https://{LOOPBACK}:{self.stack.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        return self.stack.ssl_context()

    def close(self) -> None:
        self.stack.nginx.close()

    async def wait_until_serving(self, server: AppServer, since: int, timeout: float) -> float:
        """Until Nginx has answered a request from `server` (access lines after index
        `since`); returns the seconds it took. A load balancer's view of readiness: Nginx
        may keep a server it saw failing out of rotation for fail_timeout (10 s)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            lines = self.log.refresh()[since:]
            if any(served_by(line) == server.address and line["status"] < 400 for line in lines):
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise AssertionError(f"nginx sent nothing to {server.name} for {timeout:.0f}s")


def start_proxy(workdir: Path, servers: Sequence[AppServer]) -> Proxy:
    static_root = workdir / "static"
    static_root.mkdir(exist_ok=True)
    tls = make_self_signed(workdir / "tls")
    stack = _start_nginx(workdir, [server.address for server in servers], tls, static_root)
    return Proxy(stack, NginxLog(stack.nginx.log_path))


# --- A shop's data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Buyer:
    id: uuid.UUID
    email: str
    token: str
    #: The product this buyer orders: one per buyer, so orders do not queue on one row lock.
    product_id: int


@dataclass
class Shop:
    database: PostgresService
    dbname: str
    buyers: list[Buyer]
    #: Products the load reads (never ordered, so their cache entries stay warm).
    catalog: list[int]

    def product_paths(self) -> list[str]:
        return [f"/api/v1/products/{product_id}" for product_id in self.catalog]

    def count_orders(self) -> int:
        return int(self.database.fetchval("SELECT count(*) FROM orders", self.dbname))

    def orders_found(self, order_ids: set[str]) -> set[str]:
        """Which of `order_ids` exist in the database."""
        if not order_ids:
            return set()
        literals = ",".join(f"'{uuid.UUID(order_id)}'" for order_id in order_ids)
        rows = self.database.fetchval(
            f"SELECT coalesce(array_agg(id::text), '{{}}') FROM orders WHERE id IN ({literals})",
            self.dbname,
        )
        return set(rows)


async def _seed(
    database_url: str, buyers: int, catalog: int
) -> tuple[list[dict[str, Any]], list[int]]:
    users = [user_row() for _ in range(buyers)]
    products = [product_row(n, stock=STOCK) for n in range(buyers + catalog)]
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            if users:
                await conn.execute(insert(User), users)
            await conn.execute(insert(Product), products)
            skus = [row["sku"] for row in products]
            found = dict(
                (
                    await conn.execute(select(Product.sku, Product.id).where(Product.sku.in_(skus)))
                ).all()
            )
    finally:
        await engine.dispose()
    return users, [found[row["sku"]] for row in products]


def seed_shop(
    database: PostgresService, dbname: str, login_url: str, *, buyers: int = 6, catalog: int = 4
) -> Shop:
    """Buyers (verified, logged in through `login_url`) and products, written to the database."""
    users, product_ids = asyncio.run(_seed(database.url(dbname), buyers, catalog))
    people: list[Buyer] = []
    with httpx.Client(timeout=60) as client:
        for row, product_id in zip(users, product_ids, strict=False):
            response = client.post(login_url, data={"username": row["email"], "password": PASSWORD})
            assert response.status_code == 200, response.text
            people.append(
                Buyer(row["id"], row["email"], response.json()["access_token"], product_id)
            )
    return Shop(database, dbname, people, product_ids[buyers:])


@dataclass
class ProxiedShop:
    """Two app servers behind the repository's Nginx, sharing PostgreSQL and Redis."""

    servers: list[AppServer]
    proxy: Proxy
    shop: Shop

    def ensure_ready(self) -> None:
        """Both servers up with every worker serving, whatever the previous scenario left."""
        for server in self.servers:
            if server.process is None or not server.process.is_running():
                server.start()
            else:
                server.wait_for_workers()

    def close(self) -> None:
        try:
            self.proxy.close()
        finally:
            for server in self.servers:
                server.close()
