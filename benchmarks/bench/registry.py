"""Every server and scenario the suite knows. Add new ones here; the runner needs no change.

A new scenario is one `Scenario(...)` entry: name it, point it at a server in `SERVERS` (or add
one), give the path, an optional wrk Lua script from benchmarks/scripts/, the scenario it is
compared with and its target. Scenarios that share a server share one process for the run.

Scenario files written alongside (benchmarks/scenarios_*.py, each exporting SERVERS and
SCENARIOS) are merged at the end of this module; a missing or broken one is reported as
skipped, never fatal.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import stack as stack_module
from .model import CommandBuilder, LaunchContext, Load, Scenario, ServerSpec, StackInfo, Target

# Identical for every uvicorn-served baseline so only the application differs. Uvicorn's own
# access log is off because Slipway writes its own; the server and date headers stay at their
# defaults. `--workers 1` runs uvicorn in-process, without a supervisor.
UVICORN_FLAGS: tuple[str, ...] = (
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--timeout-graceful-shutdown",
    "5",
)

REFERENCE = "bare_fastapi"
PRODUCTS = "/api/v1/products"
# Words the seed puts in product names and descriptions: each matches about 1/16 of the rows,
# what a shopper's one-word search looks like.
SEARCH_WORDS = ("kettle", "lamp", "chair", "desk", "backpack", "speaker", "notebook", "mug")
# The login storm: more concurrent logins than the Argon2 pool (4 per process) serves at once.
LOGIN_CONNECTIONS = 32
# The liveness probe: 2 connections, each pausing 10 ms between requests (~150 req/s): enough
# samples for a p99 over a few seconds, too few to load the server.
PROBE_CONNECTIONS = 2
PROBE_DELAY_MS = 10


def uvicorn_command(app: str, *, factory: bool = False) -> CommandBuilder:
    def build(ctx: LaunchContext) -> Sequence[str]:
        # The venv's interpreter directly, not `uv run`: the PID we hold is then the server
        # itself, which is what gets pinned, measured for RSS and stopped.
        command = [ctx.python, "-m", "uvicorn", app, *UVICORN_FLAGS, "--port", str(ctx.port)]
        if factory:
            command.append("--factory")
        return command

    return build


def _baselines_env(ctx: LaunchContext) -> Mapping[str, str]:
    return {"PYTHONPATH": str(ctx.repo_root / "benchmarks" / "baselines")}


def _slipway_missing() -> str | None:
    if importlib.util.find_spec("slipway") is None:
        return "the slipway package is not installed in this environment"
    if importlib.util.find_spec("slipway.app") is None:
        return "slipway.app does not exist yet"
    return None


# --- Nginx: the ceiling of the loopback setup ----------------------------------------------

NGINX_CONF = """\
# Written by the benchmark harness: one worker returning the same body as the baselines.
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    # uvicorn never closes a keep-alive connection after N requests; neither does this.
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        default_type application/json;
        location / {{ return 200 '{{"status":"ok"}}'; }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def _nginx_command(ctx: LaunchContext) -> Sequence[str]:
    conf = ctx.workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workdir=ctx.workdir, port=ctx.port))
    binary = nginx_binary()
    assert binary is not None
    return [binary, "-p", str(ctx.workdir), "-c", str(conf)]


def _nginx_missing() -> str | None:
    if nginx_binary() is None:
        return "nginx is not installed (Debian: apt-get install nginx)"
    return None


# --- Slipway, production mode on the suite's PostgreSQL and Redis ------------------------


def slipway_serve(workers: int) -> CommandBuilder:
    def build(ctx: LaunchContext) -> Sequence[str]:
        # `slipway serve` as an operator runs it: uvicorn with uvloop, httptools (Slipway's
        # draining protocol), no uvicorn access log (Slipway writes its own), JSON logs.
        return [
            ctx.python,
            "-m",
            "slipway",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(ctx.port),
            "--workers",
            str(workers),
        ]

    return build


def _stack(ctx: LaunchContext) -> StackInfo:
    if ctx.stack is None:
        raise RuntimeError("this server needs the PostgreSQL/Redis stack")
    return ctx.stack


def slipway_env(database: str, **overrides: str) -> Callable[[LaunchContext], Mapping[str, str]]:
    def build(ctx: LaunchContext) -> Mapping[str, str]:
        stack = _stack(ctx)
        env = stack_module.production_env(
            database_url=stack.databases[database],
            redis_url=stack.redis_url,
            secret_key=stack.secret_key,
            workdir=ctx.workdir,
        )
        return {**env, **overrides}

    return build


def _slipway_server(
    name: str,
    description: str,
    *,
    database: str = stack_module.LARGE,
    workers: int = 1,
    pin: bool = True,
    **env: str,
) -> ServerSpec:
    return ServerSpec(
        name=name,
        description=description,
        command=slipway_serve(workers),
        env=slipway_env(database, **env),
        ready_path="/health/ready",
        unavailable=_slipway_missing,
        pin=pin,
        needs_stack=True,
        ready_timeout_s=120.0,
    )


# --- what the scripts read ---------------------------------------------------------------


def _ids(values: Sequence[int]) -> str:
    return ",".join(str(value) for value in values)


def cached_ids_env(ctx: LaunchContext) -> Mapping[str, str]:
    return {"BENCH_IDS": _ids(_stack(ctx).facts["cached_product_ids"])}


def id_range_env(ctx: LaunchContext) -> Mapping[str, str]:
    large = _stack(ctx).facts[stack_module.LARGE]
    return {"BENCH_ID_MIN": str(large["min_id"]), "BENCH_ID_MAX": str(large["max_id"])}


def words_env(_ctx: LaunchContext) -> Mapping[str, str]:
    return {"BENCH_WORDS": ",".join(SEARCH_WORDS)}


def orders_env(ctx: LaunchContext) -> Mapping[str, str]:
    facts = _stack(ctx).facts
    return {
        "BENCH_IDS": _ids(facts["order_product_ids"]),
        "BENCH_TOKENS": ",".join(facts["tokens"]),
    }


def login_env(ctx: LaunchContext) -> Mapping[str, str]:
    facts = _stack(ctx).facts
    return {"BENCH_USERS": ",".join(facts["users"]), "BENCH_PASSWORD": facts["password"]}


def probe_env(_ctx: LaunchContext) -> Mapping[str, str]:
    return {"BENCH_DELAY_MS": str(PROBE_DELAY_MS)}


def deep_page_path(ctx: LaunchContext) -> str:
    return f"{PRODUCTS}?cursor={stack_module.deep_cursor(_stack(ctx))}"


# --- preflight: one real request, so a wrong path is never benchmarked as a fast error ----


def _get_check(
    path_of: Callable[[LaunchContext], str], *, nonempty: bool = False
) -> Callable[[str, LaunchContext], str | None]:
    def check(base_url: str, ctx: LaunchContext) -> str | None:
        import httpx

        path = path_of(ctx)
        response = httpx.get(base_url + path, timeout=30.0)
        if response.status_code != 200:
            return f"GET {path} answered {response.status_code}: {response.text[:300]}"
        if nonempty and not response.json().get("items"):
            return f"GET {path} answered an empty page: the scenario would measure nothing"
        return None

    return check


_prewarmed: set[str] = set()


def _cached_check(base_url: str, ctx: LaunchContext) -> str | None:
    """Every hot id read once, so the cache holds all of them before the warm-up. Once per
    Redis: every Slipway server of the large database shares its entries."""
    stack = _stack(ctx)
    if stack.redis_url not in _prewarmed:
        ids = stack.facts["cached_product_ids"]
        stack_module.prewarm(base_url, [f"{PRODUCTS}/{product_id}" for product_id in ids])
        _prewarmed.add(stack.redis_url)
    return _get_check(lambda _ctx: f"{PRODUCTS}/{stack.facts['cached_product_ids'][0]}")(
        base_url, ctx
    )


def _max_id(ctx: LaunchContext) -> str:
    return f"{PRODUCTS}/{_stack(ctx).facts[stack_module.LARGE]['max_id']}"


def _order_check(base_url: str, ctx: LaunchContext) -> str | None:
    import uuid

    import httpx

    facts = _stack(ctx).facts
    response = httpx.post(
        base_url + "/api/v1/orders",
        json={"items": [{"product_id": facts["order_product_ids"][0], "quantity": 1}]},
        headers={
            "Authorization": f"Bearer {facts['tokens'][0]}",
            "Idempotency-Key": f"preflight-{uuid.uuid4()}",
        },
        timeout=30.0,
    )
    if response.status_code != 201:
        return f"POST /api/v1/orders answered {response.status_code}: {response.text[:300]}"
    return None


def _login_check(base_url: str, ctx: LaunchContext) -> str | None:
    import httpx

    facts = _stack(ctx).facts
    response = httpx.post(
        base_url + "/api/v1/auth/login",
        data={"username": facts["users"][0], "password": facts["password"]},
        timeout=30.0,
    )
    if response.status_code != 200:
        return f"POST /api/v1/auth/login answered {response.status_code}: {response.text[:300]}"
    return None


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            name="raw_asgi",
            description="raw ASGI callable (benchmarks/baselines/raw_asgi.py)",
            command=uvicorn_command("raw_asgi:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="bare_starlette",
            description="Starlette, one route (benchmarks/baselines/starlette_app.py)",
            command=uvicorn_command("starlette_app:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="bare_fastapi",
            description="FastAPI, one async route (benchmarks/baselines/fastapi_app.py)",
            command=uvicorn_command("fastapi_app:app"),
            env=_baselines_env,
        ),
        ServerSpec(
            name="nginx",
            description="Nginx, one worker, `return 200` with the same body (loopback ceiling)",
            command=_nginx_command,
            unavailable=_nginx_missing,
        ),
        _slipway_server(
            "slipway",
            "Slipway, production, 1 worker, PostgreSQL (1M products) and Redis, cache on",
        ),
        _slipway_server(
            "slipway_nocache",
            "Slipway as `slipway`, CACHE_ENABLED=false: every product read is a PostgreSQL read",
            CACHE_ENABLED="false",
        ),
        _slipway_server(
            "slipway_small",
            "Slipway as `slipway`, on the small database (10k products)",
            database=stack_module.SMALL,
            # Same Redis, other product ids: its cache entries must not mix with the large
            # database's.
            CACHE_PREFIX="slipway-small",
        ),
        _slipway_server(
            "slipway_1w_unpinned",
            "Slipway as `slipway`, 1 worker free to run on any core",
            pin=False,
        ),
        _slipway_server(
            "slipway_2w",
            "Slipway as `slipway`, 2 workers (`--workers 2`), on both cores",
            workers=2,
            pin=False,
        ),
    )
}


def _api(
    name: str,
    server: str,
    path: str,
    description: str,
    *,
    env: Callable[[LaunchContext], Mapping[str, str]] | None = None,
    check: Callable[[str, LaunchContext], str | None] | None = None,
    **options: object,
) -> Scenario:
    return Scenario(
        name=name,
        server=server,
        path=path,
        description=description,
        lua_script="api_get.lua",
        wrk_env=env,
        preflight=check,
        **options,  # type: ignore[arg-type]
    )


_uncached_check = _get_check(_max_id)
_first_page_check = _get_check(lambda _ctx: PRODUCTS, nonempty=True)
_deep_page_check = _get_check(deep_page_path, nonempty=True)
_search_check = _get_check(lambda _ctx: f"{PRODUCTS}?q={SEARCH_WORDS[0]}", nonempty=True)

SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        # Baselines ----------------------------------------------------------------------
        Scenario(
            name="raw_asgi",
            server="raw_asgi",
            path="/",
            description='raw ASGI app returning {"status":"ok"}',
            baseline=REFERENCE,
            is_baseline=True,
            quick=False,
        ),
        Scenario(
            name="bare_starlette",
            server="bare_starlette",
            path="/",
            description='bare Starlette app returning {"status":"ok"}',
            baseline=REFERENCE,
            is_baseline=True,
            quick=False,
        ),
        Scenario(
            name=REFERENCE,
            server="bare_fastapi",
            path="/",
            description='bare FastAPI async route returning {"status":"ok"}',
            is_baseline=True,
        ),
        Scenario(
            name="nginx_static",
            server="nginx",
            path="/",
            description='Nginx returning {"status":"ok"}: the ceiling of the loopback setup',
            baseline=REFERENCE,
            is_baseline=True,
            quick=False,
        ),
        # Slipway, 1 worker pinned to the server core --------------------------------------
        Scenario(
            name="health_live",
            server="slipway",
            path="/health/live",
            description="GET /health/live through the full middleware stack",
            baseline=REFERENCE,
            target=Target(min_throughput_ratio=0.8, max_p99_ratio=1.5),
        ),
        _api(
            "product_cached",
            "slipway",
            f"{PRODUCTS}/{{id}}",
            "GET /api/v1/products/{id}, 256 hot ids, every read a Redis hit",
            env=cached_ids_env,
            check=_cached_check,
            baseline=REFERENCE,
            target=Target(min_throughput_ratio=0.6),
        ),
        _api(
            "product_uncached",
            "slipway_nocache",
            f"{PRODUCTS}/{{id}}",
            "GET /api/v1/products/{id}, random ids over 1M rows, cache off (PostgreSQL)",
            env=id_range_env,
            check=_uncached_check,
            baseline=REFERENCE,
            target=Target(min_throughput_ratio=0.3),
        ),
        _api(
            "products_first_page",
            "slipway",
            PRODUCTS,
            "GET /api/v1/products: first keyset page (20 of 1M, newest first)",
            check=_first_page_check,
            baseline=REFERENCE,
        ),
        Scenario(
            name="products_deep_page",
            server="slipway",
            path=PRODUCTS,
            path_factory=deep_page_path,
            description="GET /api/v1/products?cursor=…: a keyset page ~1M rows deep",
            lua_script="api_get.lua",
            preflight=_deep_page_check,
            baseline="products_first_page",
            target=Target(max_p50_ratio=1.5),
        ),
        _api(
            "search_small",
            "slipway_small",
            f"{PRODUCTS}?q={{word}}",
            "GET /api/v1/products?q=<word>: full-text search over 10k products",
            env=words_env,
            check=_search_check,
            baseline=REFERENCE,
        ),
        _api(
            "search_large",
            "slipway",
            f"{PRODUCTS}?q={{word}}",
            "GET /api/v1/products?q=<word>: full-text search over 1M products",
            env=words_env,
            check=_search_check,
            baseline="search_small",
            target=Target(max_p50_ratio=2.0),
        ),
        Scenario(
            name="order_create",
            server="slipway",
            path="/api/v1/orders",
            description="POST /api/v1/orders with a unique Idempotency-Key, 64 connections",
            lua_script="order_create.lua",
            wrk_env=orders_env,
            preflight=_order_check,
            connections=64,
            baseline="product_uncached",
            target=Target(min_throughput_ratio=0.3, max_errors=0),
        ),
        Scenario(
            name="live_probe_idle",
            server="slipway",
            path="/health/live",
            description=f"GET /health/live paced probe ({PROBE_CONNECTIONS} conns, "
            f"{PROBE_DELAY_MS} ms apart), server otherwise idle",
            lua_script="probe.lua",
            wrk_env=probe_env,
            connections=PROBE_CONNECTIONS,
            is_baseline=True,
        ),
        Scenario(
            name="live_probe_login_storm",
            server="slipway",
            path="/health/live",
            description=f"the same probe during a login storm ({LOGIN_CONNECTIONS} conns, Argon2)",
            lua_script="probe.lua",
            wrk_env=probe_env,
            connections=PROBE_CONNECTIONS,
            background=Load(
                path="/api/v1/auth/login",
                lua_script="login.lua",
                connections=LOGIN_CONNECTIONS,
                description="POST /api/v1/auth/login (seeded customers)",
                wrk_env=login_env,
            ),
            preflight=_login_check,
            baseline="live_probe_idle",
            target=Target(max_p99_ratio=3.0),
        ),
        # N workers: server on both cores, wrk unpinned ---------------------------------------
        _api(
            "product_cached_1w_unpinned",
            "slipway_1w_unpinned",
            f"{PRODUCTS}/{{id}}",
            "cached product read, 1 worker, server and wrk on any core",
            env=cached_ids_env,
            check=_cached_check,
            pin_client=False,
            is_baseline=True,
        ),
        _api(
            "product_cached_2w",
            "slipway_2w",
            f"{PRODUCTS}/{{id}}",
            "cached product read, 2 workers, server and wrk on any core",
            env=cached_ids_env,
            check=_cached_check,
            pin_client=False,
            baseline="product_cached_1w_unpinned",
            target=Target(min_throughput_ratio=1.4),
        ),
        Scenario(
            name="health_live_2w",
            server="slipway_2w",
            path="/health/live",
            description="GET /health/live, 2 workers unpinned (vs 1 worker pinned)",
            pin_client=False,
            baseline="health_live",
            quick=False,
        ),
        _api(
            "products_first_page_2w",
            "slipway_2w",
            PRODUCTS,
            "first product page, 2 workers unpinned (vs 1 worker pinned)",
            check=_first_page_check,
            pin_client=False,
            baseline="products_first_page",
            quick=False,
        ),
        _api(
            "search_large_2w",
            "slipway_2w",
            f"{PRODUCTS}?q={{word}}",
            "search over 1M products, 2 workers unpinned (vs 1 worker pinned)",
            env=words_env,
            check=_search_check,
            pin_client=False,
            baseline="search_large",
            quick=False,
        ),
        Scenario(
            name="order_create_2w",
            server="slipway_2w",
            path="/api/v1/orders",
            description="order creation, 2 workers unpinned (vs 1 worker pinned)",
            lua_script="order_create.lua",
            wrk_env=orders_env,
            preflight=_order_check,
            pin_client=False,
            baseline="order_create",
            quick=False,
        ),
    )
}

# --- scenario files from other areas -------------------------------------------------------

#: Merged in this order when present. Each exports SERVERS and SCENARIOS dicts.
EXTENSIONS = ("scenarios_commerce", "scenarios_observability", "scenarios_servers")
#: Extension files that could not be merged, with the reason (reported as skipped).
EXTENSION_PROBLEMS: dict[str, str] = {}


def _load_extensions() -> None:
    benchmarks_dir = Path(__file__).resolve().parents[1]
    if str(benchmarks_dir) not in sys.path:
        sys.path.insert(0, str(benchmarks_dir))
    for module_name in EXTENSIONS:
        if not (benchmarks_dir / f"{module_name}.py").exists():
            continue
        try:
            module = importlib.import_module(module_name)
            servers: dict[str, ServerSpec] = dict(module.SERVERS)
            scenarios: dict[str, Scenario] = dict(module.SCENARIOS)
        except Exception as exc:  # one area's broken file must not stop every benchmark
            EXTENSION_PROBLEMS[module_name] = f"{type(exc).__name__}: {exc}"
            continue
        clashes = sorted((set(servers) & set(SERVERS)) | (set(scenarios) & set(SCENARIOS)))
        if clashes:
            EXTENSION_PROBLEMS[module_name] = f"names already defined: {', '.join(clashes)}"
            continue
        SERVERS.update(servers)
        SCENARIOS.update(
            {name: _with_origin(scenario, module_name) for name, scenario in scenarios.items()}
        )


def _with_origin(scenario: Scenario, origin: str) -> Scenario:
    from dataclasses import replace

    return replace(scenario, origin=origin)


def resolve(names: Sequence[str] | None, *, quick: bool) -> list[Scenario]:
    """The scenarios to run, in registry order, with every baseline they divide by added."""
    if names:
        unknown = [name for name in names if name not in SCENARIOS]
        if unknown:
            known = ", ".join(SCENARIOS)
            raise KeyError(f"unknown scenario(s): {', '.join(unknown)} (known: {known})")
        wanted = set(names)
    else:
        wanted = {name for name, scenario in SCENARIOS.items() if scenario.quick or not quick}
    pending = list(wanted)
    while pending:
        baseline = SCENARIOS[pending.pop()].baseline
        if baseline is not None and baseline not in wanted:
            wanted.add(baseline)
            pending.append(baseline)
    return [scenario for name, scenario in SCENARIOS.items() if name in wanted]


_load_extensions()
