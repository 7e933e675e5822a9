"""PostgreSQL and Redis for the Slipway scenarios: started on loopback, migrated, seeded.

The servers are the test suite's own (tests/support/services.py): the real binaries from
the OS packages, on free ports, in throwaway directories, torn down with the run (also at
interpreter exit and on SIGTERM). Two databases are seeded with `slipway seed` through the
CLI, as an operator would: a large one (1M products) for the deep-page and search scenarios
and every other API scenario, and a small one (10k products) that search at 1M is compared
with. Both then get production durability back (the test cluster starts with fsync off to
seed fast), and the harness reads what the scenarios need from the data: ids in stock, a
deep keyset position, the seeded customers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model import StackInfo
from .servers import pin_tree
from .wrk import HarnessError

if TYPE_CHECKING:
    from tests.support.services import PostgresServer, RedisServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SEED = 1
LARGE = "large"
SMALL = "small"
# Orders take one unit per request: products with this much stock never run out in a run.
ORDER_MIN_STOCK = 300
ORDER_PRODUCTS = 4000
# The hot set of the cached read: small enough to be warmed completely before measuring.
CACHED_PRODUCTS = 256
# Rows before the end of the default listing where the deep page starts (a full page).
DEEP_PAGE_FROM_END = 60
# Customers logged in for the order scenario: spreads the per-user rate-limit lists.
ORDER_USERS = 20


@dataclass(frozen=True)
class SeedPlan:
    large_products: int
    small_products: int
    users: int
    orders: int

    @property
    def sizes(self) -> dict[str, int]:
        return {LARGE: self.large_products, SMALL: self.small_products}


FULL_PLAN = SeedPlan(large_products=1_000_000, small_products=10_000, users=200, orders=10_000)
QUICK_PLAN = SeedPlan(large_products=20_000, small_products=2_000, users=60, orders=500)
SMOKE_PLAN = SeedPlan(large_products=5_000, small_products=1_000, users=30, orders=100)


def production_env(
    *, database_url: str, redis_url: str, secret_key: str, workdir: Path
) -> dict[str, str]:
    """The environment of every Slipway process of the suite: production, as the Docker
    image runs it (ENVIRONMENT, LOG_FORMAT and PROMETHEUS_MULTIPROC_DIR are the image's)."""
    return {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secret_key,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
        "STORAGE_LOCAL_DIR": str(workdir / "storage"),
        # An empty directory: a developer's /run/secrets must not leak into the run.
        "SECRETS_DIR": str(workdir / "secrets"),
        # The default TTL (300 s) is shorter than a full run; the cached scenario must stay
        # a cache hit from its warm-up to its last round.
        "CACHE_PRODUCT_TTL": "3600",
        # Tokens are fetched once per run, which lasts longer than the 15-minute default.
        "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
        # The limiter runs as in production, but wrk is one machine: requests carry
        # X-Forwarded-For from a pool of client addresses (trusted from 127.0.0.1, as behind
        # Nginx), and the budgets are raised so that no client of the benchmark is refused.
        # The strict named policies (login 5/minute) exist to stop abuse, not load.
        "RATE_LIMIT_DEFAULT": "1000000/minute",
        "RATE_LIMIT_POLICIES": (
            '{"login": "1000000/minute", "search": "1000000/minute", '
            '"orders": "1000000/minute", "register": "1000/minute", '
            '"password_reset": "1000/minute"}'
        ),
        "PYTHONUNBUFFERED": "1",
    }


def _import_services() -> Any:
    # The test suite's service helpers live in tests/, a package at the repository root.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from tests.support import services

    return services


class Stack:
    """Owns PostgreSQL and Redis for one run; `close()` stops both and deletes their data."""

    def __init__(
        self,
        plan: SeedPlan,
        *,
        workdir: Path,
        python: str,
        pin_cpus: set[int] | None,
        on_step: Callable[[str], None],
        cache_root: Path | None = None,
    ) -> None:
        self.plan = plan
        self.cache_root = cache_root
        self.workdir = workdir / "stack"
        self.python = python
        self.pin_cpus = pin_cpus
        self.on_step = on_step
        self.secret_key = secrets.token_urlsafe(48)
        self.postgres: PostgresServer | None = None
        self.redis: RedisServer | None = None
        self.timings: dict[str, float] = {}
        self.versions: dict[str, str] = {}
        self.from_cache = False

    def start(self) -> StackInfo:
        services = _import_services()
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.on_step("starting PostgreSQL and Redis")
        try:
            self.postgres = services.PostgresServer().start()
            self.redis = services.RedisServer().start()
        except services.ServiceUnavailable as exc:
            raise HarnessError(
                f"cannot start PostgreSQL/Redis for the Slipway scenarios: {exc}. Install "
                "them (Debian: `apt-get install postgresql redis-server`) or run only the "
                "baselines (--scenarios bare_fastapi,raw_asgi,bare_starlette)."
            ) from exc
        assert self.postgres is not None
        assert self.redis is not None
        self.versions = {"postgresql": self.postgres.version, "redis": self.redis.version}
        self._pin()
        self.timings["services_s"] = round(time.monotonic() - started, 2)

        cached = self._cache_path()
        if cached is not None and (cached / "PG_VERSION").exists():
            self.on_step(f"restoring the seeded databases from {cached}")
            started = time.monotonic()
            self._restore(cached)
            self.from_cache = True
            self.timings["restore_s"] = round(time.monotonic() - started, 2)
        else:
            self._create_and_seed()
            if cached is not None:
                self.on_step(f"keeping the seeded databases in {cached}")
                self._store(cached)
        urls = {name: self.postgres.url(f"bench_{name}") for name in (LARGE, SMALL)}
        self.on_step("reading ids, customers and a deep position from the data")
        facts = asyncio.run(self._facts())
        return StackInfo(
            redis_url=self.redis.url(),
            databases=urls,
            secret_key=self.secret_key,
            seed_sizes=self.plan.sizes,
            facts=facts,
        )

    def _create_and_seed(self) -> None:
        assert self.postgres is not None
        assert self.redis is not None
        urls = {
            LARGE: self.postgres.create_database("bench_large"),
            SMALL: self.postgres.create_database("bench_small"),
        }
        redis_url = self.redis.url()
        started = time.monotonic()
        self._run_all(
            "migrating both databases (slipway migrate)",
            {name: ["migrate"] for name in urls},
            urls,
            redis_url,
        )
        self.timings["migrate_s"] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        sizes = self.plan.sizes
        self._run_all(
            f"seeding {sizes[LARGE]:,} + {sizes[SMALL]:,} products (slipway seed)",
            {
                LARGE: self._seed_args(sizes[LARGE], self.plan.users, self.plan.orders),
                # Search reads products only; a few customers and orders keep the small
                # database a complete one.
                SMALL: self._seed_args(sizes[SMALL], 10, 100),
            },
            urls,
            redis_url,
        )
        self.timings["seed_s"] = round(time.monotonic() - started, 2)
        self.on_step("restoring durability, analysing")
        # The test cluster runs with fsync off; the benchmark's writes (orders, logins)
        # must pay for durable commits as in production. ALTER SYSTEM refuses to run
        # inside a transaction: one statement per call.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            self.postgres.execute(f"ALTER SYSTEM SET {setting} = on")
        self.postgres.execute("SELECT pg_reload_conf()")
        for name in urls:
            self.postgres.execute("VACUUM ANALYZE", dbname=f"bench_{name}")

    # --- the seeded cluster, kept between runs ------------------------------------------

    def _cache_path(self) -> Path | None:
        """Where this plan's seeded cluster is kept: one directory per plan, schema, seed
        code and PostgreSQL version, so any change to them seeds afresh."""
        if self.cache_root is None:
            return None
        import slipway

        assert self.postgres is not None
        package = Path(slipway.__file__).resolve().parent
        digest = hashlib.sha256()
        digest.update(repr((self.plan, SEED, self.postgres.version)).encode())
        for path in [package / "seeding.py", *sorted((package / "migrations").rglob("*.py"))]:
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
        return self.cache_root / f"{self.plan.large_products}-{digest.hexdigest()[:16]}"

    def _store(self, cached: Path) -> None:
        """Copy the stopped cluster's data directory (a clean shutdown: a consistent copy)."""
        assert self.postgres is not None
        self.postgres.stop()
        cached.parent.mkdir(parents=True, exist_ok=True)
        # Older copies of the same plan are stale (the schema or the seed changed); another
        # run's copy in progress (.partial) is left alone.
        for stale in cached.parent.glob(f"{self.plan.large_products}-*"):
            if stale != cached and not stale.name.endswith(".partial"):
                shutil.rmtree(stale, ignore_errors=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        _copy_tree(self.postgres.data_dir, partial)
        try:
            partial.rename(cached)
        except OSError:
            # A concurrent run kept the same data first: its copy serves as well.
            shutil.rmtree(partial, ignore_errors=True)
        self.postgres.start()
        self._pin()

    def _restore(self, cached: Path) -> None:
        """Swap the fresh cluster's data for the kept one. postgresql.conf stays the fresh
        cluster's: it names this run's socket directory."""
        assert self.postgres is not None
        self.postgres.stop()
        data = self.postgres.data_dir
        conf = (data / "postgresql.conf").read_bytes()
        shutil.rmtree(data)
        _copy_tree(cached, data)
        (data / "postgresql.conf").write_bytes(conf)
        (data / "postmaster.pid").unlink(missing_ok=True)
        self.postgres.start()
        self._pin()

    def _seed_args(self, products: int, users: int, orders: int) -> list[str]:
        return [
            "seed",
            "--products",
            str(products),
            "--users",
            str(users),
            "--orders",
            str(orders),
            "--seed",
            str(SEED),
        ]

    def _run_all(
        self,
        step: str,
        commands: Mapping[str, list[str]],
        urls: Mapping[str, str],
        redis_url: str,
    ) -> None:
        """Run one `slipway` command per database, concurrently (PostgreSQL does the work)."""
        self.on_step(step)
        running: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        for name, args in commands.items():
            log_path = self.workdir / f"{args[0]}-{name}.log"
            env = {
                **os.environ,
                **production_env(
                    database_url=urls[name],
                    redis_url=redis_url,
                    secret_key=self.secret_key,
                    workdir=self.workdir,
                ),
                "LOG_LEVEL": "WARNING",
            }
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [self.python, "-m", "slipway", *args],
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            running[name] = (process, log_path)
        for name, (process, log_path) in running.items():
            try:
                code = process.wait(timeout=1800)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = -9
            if code != 0:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise HarnessError(
                    f"`slipway {' '.join(commands[name])}` ({name}) exited {code}:\n{tail}"
                )

    def _pin(self) -> None:
        if self.pin_cpus is None:
            return
        assert self.postgres is not None
        assert self.redis is not None
        pid_file = self.postgres.data_dir / "postmaster.pid"
        postmaster = int(pid_file.read_text().splitlines()[0])
        pin_tree(postmaster, self.pin_cpus)
        assert self.redis.process is not None
        pin_tree(self.redis.process.pid, self.pin_cpus)

    async def _facts(self) -> dict[str, Any]:
        import asyncpg  # type: ignore[import-untyped]

        from slipway.seeding import SEED_PASSWORD, seed_email

        assert self.postgres is not None
        facts: dict[str, Any] = {
            "users": [seed_email(SEED, index) for index in range(self.plan.users)],
            "password": SEED_PASSWORD,
        }
        for name in (LARGE, SMALL):
            connection = await asyncpg.connect(self.postgres.dsn(f"bench_{name}"))
            try:
                bounds = await connection.fetchrow(
                    "SELECT min(id), max(id), count(*) FROM products"
                )
                active = await connection.fetchval(
                    "SELECT count(*) FROM products WHERE status = 'active'"
                )
                facts[name] = {
                    "min_id": bounds[0],
                    "max_id": bounds[1],
                    "products": bounds[2],
                    "active_products": active,
                }
                if name != LARGE:
                    continue
                facts["order_product_ids"] = [
                    row[0]
                    for row in await connection.fetch(
                        "SELECT id FROM products WHERE status = 'active' AND stock >= $1 "
                        "ORDER BY id LIMIT $2",
                        ORDER_MIN_STOCK,
                        ORDER_PRODUCTS,
                    )
                ]
                # The highest ids: never among the order scenario's products (the lowest ids
                # in stock), whose orders invalidate their cache entries.
                facts["cached_product_ids"] = [
                    row[0]
                    for row in await connection.fetch(
                        "SELECT id FROM products ORDER BY id DESC LIMIT $1", CACHED_PRODUCTS
                    )
                ]
                # The default listing (active, newest first): the position of the row a deep
                # page starts after, near the very end of a million rows.
                deep = await connection.fetchrow(
                    "SELECT created_at, id FROM products WHERE status = 'active' "
                    "ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
                    max(active - DEEP_PAGE_FROM_END, 0),
                )
                facts["deep_position"] = [deep[0].isoformat(), deep[1]]
                facts["deep_offset"] = max(active - DEEP_PAGE_FROM_END, 0)
            finally:
                await connection.close()
        return facts

    def close(self) -> None:
        for server in (self.redis, self.postgres):
            if server is not None:
                server.close()
        self.redis = None
        self.postgres = None


def _copy_tree(source: Path, destination: Path) -> None:
    # cp -a keeps owners and modes: the data directory belongs to the postgres user when
    # the suite runs as root, and PostgreSQL refuses a data directory with loose modes.
    subprocess.run(["cp", "-a", str(source), str(destination)], check=True, timeout=900)


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "slipway-bench"


def deep_cursor(stack: StackInfo) -> str:
    """A cursor for the default product listing, positioned near its end, signed with the
    servers' secret by the app's own codec (the cursor is HMAC-signed)."""
    from slipway.catalog.schemas import ProductQuery
    from slipway.catalog.service import CatalogService
    from slipway.platform.pagination import cursor_codec

    context = CatalogService._cursor_context(ProductQuery())
    return cursor_codec(stack.secret_key).encode(context, list(stack.facts["deep_position"]))


def prewarm(base_url: str, paths: list[str], concurrency: int = 16) -> None:
    """GET every path once, concurrently: the cache holds every hot entry before measuring."""
    import httpx

    async def main() -> None:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=base_url, timeout=60.0) as client:

            async def get(path: str) -> None:
                async with limit:
                    response = await client.get(path)
                if response.status_code != 200:
                    raise HarnessError(f"prewarm GET {path} answered {response.status_code}")

            await asyncio.gather(*(get(path) for path in paths))

    asyncio.run(main())


def login_tokens(base_url: str, stack: StackInfo, count: int) -> list[str]:
    """Access tokens of `count` seeded (verified) customers, from the real login endpoint."""
    import httpx

    tokens = []
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for email in stack.facts["users"][:count]:
            response = client.post(
                "/api/v1/auth/login",
                data={"username": email, "password": stack.facts["password"]},
            )
            if response.status_code != 200:
                raise HarnessError(
                    f"login of seeded customer {email} answered {response.status_code}: "
                    f"{response.text[:300]}"
                )
            tokens.append(str(response.json()["access_token"]))
    return tokens
